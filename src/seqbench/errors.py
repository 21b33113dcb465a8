"""Errors a user can act on. Each message is one line naming the bad value and the valid choices."""


class SeqbenchError(Exception):
    """Base class: caught by the CLI and printed as one line, without a traceback."""


class ConfigError(SeqbenchError, ValueError):
    """A configuration value is invalid or an option combination is impossible."""


class DataError(SeqbenchError):
    """A corpus is missing, empty or undecodable."""


class Terminated(BaseException):
    """The process was told to stop (SIGTERM: a killed sweep, SLURM preemption; SIGINT: Ctrl-C);
    the run in flight ends KILLED with the signal as reason. A BaseException like
    KeyboardInterrupt, so no ``except Exception`` swallows it, but not a KeyboardInterrupt:
    Lightning turns that into ``sys.exit(1)`` and the reason would be lost."""

    def __init__(self, signum: int):
        import signal

        super().__init__(f"terminated by signal {signum} ({signal.Signals(signum).name})")
        self.exit_code = 128 + signum


def choice_error(what: str, value, choices) -> ConfigError:
    """``ConfigError("unknown model 'foo'; valid choices: gru, lstm, rnn")``."""
    return ConfigError(f"unknown {what} {value!r}; valid choices: {', '.join(sorted(map(str, choices)))}")


def instantiate(config, *args, **kwargs):
    """``hydra.utils.instantiate`` that lets our own errors through unwrapped, so the user sees
    the one-line message instead of Hydra's InstantiationException around it."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(config, *args, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        while cause is not None and not isinstance(cause, SeqbenchError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise
