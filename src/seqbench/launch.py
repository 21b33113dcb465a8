"""Running a study's multiruns one after another, each ``python -m seqbench -m ...`` a subprocess
with all the machine's cores (the launcher runs its jobs in parallel), with signals passed on and
no multirun left behind.

One multirun at a time keeps every core busy except in a multirun's last round of jobs: on the
converged ``cells`` study that idles less than running several multiruns side by side with one job
each (a long grid then holds one core while the others wait), and needs no estimate of each
multirun's work.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable


def run_multiruns(commands: list[list[str]], announce: Callable[[int], None] = lambda i: None,
                  then: Callable[[int], list[list[str]]] | None = None) -> int | None:
    """Run the multiruns' command lines in order, one at a time (``announce(i)`` as the i-th
    starts). ``then(i)``, called when the i-th has exited, returns the command lines of multiruns
    that waited for it; they join the end of the queue.

    On SIGTERM/SIGINT pass the signal to the one in flight (it records its runs in flight as
    KILLED and exits) instead of killing it, start no more, and return the signal (else None).
    When ``then`` or a start raises, start no more either, but let the one in flight run to its
    end (its runs are recorded as usual; a signal is still passed on), then raise the error: the
    driver never exits leaving a multirun behind."""
    received: list[int] = []
    failure: list[Exception] = []
    running: list[tuple[int, subprocess.Popen]] = []
    commands = list(commands)
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
            try:
                if starting() and not running:
                    i = pending.pop(0)
                    announce(i)
                    sys.stdout.flush(), sys.stderr.flush()
                    running.append((i, subprocess.Popen(commands[i])))
                i, proc = running[0]
                if proc.poll() is None:
                    time.sleep(0.2)
                    continue
                running.clear()
                for command in (then(i) if then is not None and not received and not failure else []):
                    pending.append(len(commands))
                    commands.append(command)
            except Exception as err:  # noqa: BLE001 (raised again below, once nothing runs)
                failure.append(err)
                print(f"== {type(err).__name__}: {err}; starting no more multiruns"
                      + (", waiting for the one in flight to end" if running else ""), file=sys.stderr, flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failure:
        raise failure[0]
    return received[0] if received else None
