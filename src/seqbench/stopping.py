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
import time
from pathlib import Path

from seqbench.errors import Terminated

#: the signal that stopped this process (SIGTERM: a killed sweep, SLURM preemption; SIGINT: Ctrl-C)
stopped_by: list[int] = []


#: modules whose code runs tracking-store transactions: a signal is not raised inside them
STORE_MODULES = ("mlflow", "sqlalchemy", "sqlite3", "alembic")
#: how often a deferred signal is re-delivered, and for how long at most
REDELIVER_S, MAX_DEFER_S = 0.05, 30.0
_deferred_since: list[float] = []


def in_store_call(frame) -> bool:
    """Whether ``frame`` (or a caller) runs code of :data:`STORE_MODULES`."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(STORE_MODULES):
            return True
        frame = frame.f_back
    return False


def stop_job(signum, frame):
    """In a process that runs jobs: end the run in flight as KILLED with the signal as reason (the
    tracker records it); jobs this process would run next are skipped.

    A signal that lands inside a tracking-store call is re-delivered every ``REDELIVER_S`` until
    the call has returned: raised inside it, it would leave the call's transaction open and its
    sqlite lock held, so that no job could write its run's end (seen with two jobs stopped at once)."""
    if not stopped_by:
        stopped_by.append(signum)
    if in_store_call(frame):
        if not _deferred_since:                          # the first deferral starts the clock
            _deferred_since.append(time.monotonic())
        if time.monotonic() - _deferred_since[0] < MAX_DEFER_S:
            redeliver = threading.Timer(REDELIVER_S, os.kill, (os.getpid(), signum))
            redeliver.daemon = True
            redeliver.start()
            return
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not interrupt the recording
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
