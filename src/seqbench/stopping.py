"""Stopping cleanly on SIGTERM (a killed sweep, ``timeout``, SLURM preemption) and SIGINT (Ctrl-C).

A process that runs jobs turns the signal into :class:`seqbench.errors.Terminated`, which the
tracker records as a KILLED run with the signal as reason; jobs it would run next are skipped. A
multirun's launcher process passes the signal on to its job processes instead of raising, so
joblib does not kill them before they have recorded their runs.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from seqbench.errors import Terminated

#: the signal that stopped this process (SIGTERM: a killed sweep, SLURM preemption; SIGINT: Ctrl-C)
stopped_by: list[int] = []


def stop_job(signum, frame):
    """In a process that runs jobs: end the run in flight as KILLED with the signal as reason (the
    tracker records it); jobs this process would run next are skipped."""
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not interrupt the recording
    stopped_by.append(signum)
    raise Terminated(signum)


def stop_sweep(signum, frame):
    """In a multirun's launcher process: pass the signal on to the job processes (joblib/loky
    workers), which record their runs as KILLED and skip the jobs left, then exit with the signal's
    code. Raising here instead would make joblib kill the workers before they record anything."""
    signal.signal(signum, signal.SIG_IGN)
    stopped_by.append(signum)
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


def handle_signals(handler) -> dict:
    """Install ``handler`` for SIGTERM and SIGINT (only the main thread may); return the previous
    handlers (to restore them, ``restore_signals``)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}


def restore_signals(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
