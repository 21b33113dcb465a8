"""``python -m seqbench [group=option ...] [key=value ...]``: one Hydra-composed run;
``python -m seqbench -m model=rnn,gru seed=0,1,2``: a Hydra multirun sweep."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from seqbench.errors import SeqbenchError, Terminated
from seqbench.validate import CONF_DIR, check_overrides


#: the signal that stopped this process (SIGTERM: a killed sweep, SLURM preemption; SIGINT: Ctrl-C)
_stopped_by: list[int] = []


def _stop_job(signum, frame):
    """In a process that runs jobs: end the run in flight as KILLED with the signal as reason (the
    tracker records it); jobs this process would run next are skipped."""
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not interrupt the recording
    _stopped_by.append(signum)
    raise Terminated(signum)


def _stop_sweep(signum, frame):
    """In a multirun's launcher process: pass the signal on to the job processes (joblib/loky
    workers), which record their runs as KILLED and skip the jobs left, then exit with the signal's
    code. Raising here instead would make joblib kill the workers before they record anything."""
    signal.signal(signum, signal.SIG_IGN)
    _stopped_by.append(signum)
    for pid in child_pids():
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def child_pids() -> list[int]:
    """Direct children of this process (Linux /proc; elsewhere none: signal the process group)."""
    pids = []
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            pids += [int(p) for p in children.read_text().split()]
        except OSError:
            pass
    return pids


def _handle_signals(handler) -> None:
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, handler)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    from seqbench.run import run

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    if _stopped_by:  # this process was told to stop: the jobs left are not started
        print(f"skipped: stopped by signal {_stopped_by[0]}", file=sys.stderr)
        return None
    # again inside the job: launcher workers (joblib/loky processes, submitit on SLURM) run this
    # function in their own process, where main()'s handlers were never installed
    _handle_signals(_stop_job)
    try:
        result = run(cfg)
    except Terminated as e:
        if not multirun:
            raise
        print(f"seqbench: job {e}", file=sys.stderr)
        return None  # recorded KILLED; the launcher's process exits once the jobs are done
    except SeqbenchError as e:  # a user error: one line, no traceback
        print(f"seqbench: error: {e}", file=sys.stderr)
        if multirun:
            return None  # recorded FAILED in MLflow; the sweep goes on with the other jobs
        sys.exit(2)
    except Exception as e:
        if not multirun:
            raise
        print(f"seqbench: job failed: {type(e).__name__}: {e}", file=sys.stderr)
        return None  # recorded FAILED with its reason; never stop the other jobs
    return result.get("val/loss")  # the objective a Hydra sweeper (optuna) minimises


def main() -> None:
    multirun = any(a in ("-m", "--multirun") for a in sys.argv[1:])
    _handle_signals(_stop_sweep if multirun else _stop_job)
    try:
        check_overrides(sys.argv[1:])
        _hydra_main()
    except SeqbenchError as e:
        print(f"seqbench: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (Terminated, SystemExit, Exception):
        if not _stopped_by:
            raise
    if _stopped_by:
        print(f"seqbench: {Terminated(_stopped_by[0])}; runs in flight are recorded KILLED", file=sys.stderr)
        sys.exit(128 + _stopped_by[0])


if __name__ == "__main__":
    main()
