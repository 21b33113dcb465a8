"""Starting a sweep's multiruns: several at once, each ``python -m seqbench`` one a fork of a
preloaded process, with signals passed on and no multirun left behind.

``python -m seqbench -m ...`` spends ~6 s of a core importing torch, Lightning, MLflow, Hydra and
datasets before its first job; a study starts many multiruns (``modern``: 16). The sweep therefore
starts a multiprocessing forkserver that imports them once (:func:`start_forkserver`, while the
driver's own checks run on another core), and each seqbench multirun is a fork of it
(:class:`ForkedSeqbench`), run in the starter's working directory, environment and standard
output/error, as a subprocess would be. Any other command line starts as a subprocess.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

#: what a multirun imports before its first job (~6 s of a core): the sweep's forkserver imports
#: it once, and each ``python -m seqbench`` multirun of the sweep is a fork of that process
PRELOAD = ["seqbench.__main__", "seqbench.run", "seqbench.tracking", "mlflow.tracking", "datasets"]


@functools.cache
def forkserver() -> multiprocessing.context.BaseContext:
    """The multiprocessing context whose processes fork from a server that has imported
    :data:`PRELOAD` (started at the first call of :func:`start_forkserver` or of a process)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def start_forkserver() -> None:
    """Start the forkserver now, so that its imports overlap the driver's own work (the checks)."""
    from multiprocessing import forkserver as server

    forkserver()
    server.ensure_running()


def run_seqbench(argv: list[str], cwd: str, env: dict[str, str], stdio: tuple["InheritedFd", ...]) -> None:
    """``python -m seqbench <argv>`` in this (forked) process, in the starter's working directory,
    environment and standard output/error (the forkserver's are those of when it started), ending
    as the interpreter ends: a multiprocessing child first joins its child processes, and so would
    wait out the idle timeout (5 min) of its multirun's joblib workers, which loky shuts down only
    in the exit hooks that the interpreter runs first (``threading._shutdown``, then ``atexit``)."""
    import atexit
    import threading

    from seqbench.__main__ import main

    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for target, fd in zip((1, 2), stdio):
        os.dup2(fd, target)
        os.close(fd)
    sys.argv = ["seqbench", *argv]
    try:
        main()
    finally:
        threading._shutdown()
        atexit._run_exitfuncs()


class InheritedFd:
    """A file descriptor of the starting process, passed to a forkserver child (which gets its
    own duplicate: ``multiprocessing.reduction.DupFd``)."""

    def __init__(self, fd: int):
        self.fd = fd

    def __reduce__(self):
        from multiprocessing import reduction

        return _detach, (reduction.DupFd(self.fd),)


def _detach(dup) -> int:
    return dup.detach()


class ForkedSeqbench:
    """A ``python -m seqbench ...`` command line run as a fork of the :func:`forkserver`, with
    Popen's ``poll`` and ``send_signal``: a multirun then starts in a fraction of a second instead
    of importing torch, Lightning, MLflow, Hydra and datasets again (the ``modern`` study starts 16)."""

    def __init__(self, argv: list[str]):
        sys.stdout.flush(), sys.stderr.flush()
        self.process = forkserver().Process(
            target=run_seqbench, name="seqbench multirun",
            args=(argv, os.getcwd(), dict(os.environ), (InheritedFd(1), InheritedFd(2))))
        self.process.start()
        self.pid = self.process.pid

    def poll(self) -> int | None:
        return self.process.exitcode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)


def start(command: list[str]):
    """Start a multirun's command line: a seqbench one forked (:class:`ForkedSeqbench`), any
    other as a subprocess."""
    if command[:3] == [sys.executable, "-m", "seqbench"]:
        return ForkedSeqbench(command[3:])
    return subprocess.Popen(command)


def run_multiruns(commands: list[list[str]], lanes: int = 1, announce=lambda i: None,
                  work: Sequence[float] | None = None,
                  then: Callable[[int], list[tuple[list[str], float]]] | None = None) -> int | None:
    """Run the multiruns, up to ``lanes`` at once: in order, or with ``work`` the largest first
    (``announce(i)`` as the i-th starts). ``then(i)``, called when the i-th has exited, returns the
    (command, work) of multiruns that waited for it; they join the queue as the next numbers (by
    their work, or last).

    On SIGTERM/SIGINT pass the signal to each one in flight (it records its runs in flight as
    KILLED and exits) instead of killing it, start no more, and return the signal (else None).
    When ``then`` or a start raises, start no more either, but let those in flight run to their
    end (their runs are recorded as usual; a signal is still passed on), then raise the error: the
    driver never exits leaving multiruns behind."""
    received: list[int] = []
    failure: list[Exception] = []
    running: list[tuple[int, subprocess.Popen | ForkedSeqbench]] = []
    commands, sizes = list(commands), list(work) if work is not None else [0.0] * len(commands)
    pending = list(range(len(commands)))

    def forward(signum, frame):
        if not received:
            received.append(signum)
            for _, proc in running:  # again, if the whole process group got it: its handler ignores repeats
                if proc.poll() is None:
                    proc.send_signal(signum)

    def starting() -> bool:
        return bool(pending) and not received and not failure

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while running or starting():
            ended = []
            try:
                while starting() and len(running) < lanes:
                    if work is not None:  # stable: equal work keeps the queue's order
                        pending.sort(key=lambda k: -sizes[k])
                    i = pending.pop(0)
                    announce(i)
                    running.append((i, start(commands[i])))
                ended = [i for i, proc in running if proc.poll() is not None]
                running = [(i, proc) for i, proc in running if i not in ended]
                for i in ended:
                    for command, size in (then(i) if then is not None and not received and not failure else []):
                        pending.append(len(commands))
                        commands.append(command)
                        sizes.append(size)
            except Exception as err:  # noqa: BLE001 (raised again below, once nothing runs)
                failure.append(err)
                print(f"== {type(err).__name__}: {err}; starting no more multiruns, waiting for the "
                      f"{len(running)} in flight to end", file=sys.stderr, flush=True)
            if running and not ended:
                time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        raise failure[0]
    return received[0] if received else None
