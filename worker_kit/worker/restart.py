"""Replacing the worker process in place: `os.execv` of the same command line.

After a handler got stuck (a thread that cannot be interrupted) or the process went over
its memory cap, the worker replaces itself rather than exit: the PID, the container, the
environment and the command line stay, the handler module loads afresh, and nothing
outside has to restart anything. `sys.orig_argv` is the interpreter's own command line,
so `python handler.py`, `python -m pkg` and `worker-kit work handler.py` all come back
as they were started.

A loop guard keeps a handler that gets stuck on every job from restarting many times a
second: the times of recent restarts travel in WORKER_KIT_RESTARTS (monotonic seconds,
a system-wide clock on Linux and macOS, so they survive exec); beyond FREE_RESTARTS within
WINDOW_S, each restart first waits twice as long as the last one, up to MAX_DELAY_S.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import NoReturn

log = logging.getLogger("worker_kit.worker")

RESTARTS_VAR = "WORKER_KIT_RESTARTS"
REASON_VAR = "WORKER_KIT_RESTART_REASON"
WINDOW_S = 600.0
FREE_RESTARTS = 3
MAX_DELAY_S = 60.0

#: The working directory at start-up: a handler that changes directory must not break a
#: relative path on the command line.
_start_cwd = os.getcwd()


def recent_restarts(env: Mapping[str, str], now: float) -> list[float]:
    """The restart times in `env` within WINDOW_S before `now` (bad entries are ignored)."""
    times = []
    for part in env.get(RESTARTS_VAR, "").split(","):
        try:
            t = float(part)
        except ValueError:
            continue
        if 0 <= now - t < WINDOW_S:
            times.append(t)
    return times


def backoff_delay(restarts: int) -> float:
    """Seconds to wait before a restart when `restarts` happened within the window already."""
    if restarts < FREE_RESTARTS:
        return 0.0
    return min(MAX_DELAY_S, 2.0 ** (restarts - FREE_RESTARTS))


def log_if_restarted(env: Mapping[str, str]) -> None:
    """At start-up: say that this process replaced an earlier one, and why."""
    if RESTARTS_VAR not in env:
        return
    count = len(recent_restarts(env, time.monotonic()))
    log.warning("this worker process replaced itself in place (%s); %d restart(s) in the last %.0f s",
                env.get(REASON_VAR) or "unknown reason", count, WINDOW_S)


def replace_process(reason: str, env: MutableMapping[str, str] | None = None) -> NoReturn:
    """Exec the same command line again, after the loop guard's delay. Never returns: if the
    exec itself fails, the process exits with code 3, as WORKER_KIT_ON_STUCK=exit would."""
    env = os.environ if env is None else env
    now = time.monotonic()
    recent = recent_restarts(env, now)
    delay = backoff_delay(len(recent))
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    if delay:
        log.warning("restart loop guard: %d restarts in the last %.0f s (%s each time?); waiting %.0f s "
                    "before restarting", len(recent), WINDOW_S, reason, delay)
        _sleep_unless_signalled(delay)
    env[RESTARTS_VAR] = ",".join(f"{t:.3f}" for t in [*recent, time.monotonic()])
    env[REASON_VAR] = reason
    log.warning("replacing this worker process in place (%s): %s", reason, " ".join(argv))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.chdir(_start_cwd)
        os.execve(sys.executable, argv, dict(env))
    except OSError as exc:
        print(f"worker_kit: could not restart in place ({exc}); exiting with code 3", file=sys.stderr,
              flush=True)
    os._exit(3)


def _sleep_unless_signalled(delay: float) -> None:
    """Sleep out the guard's delay; SIGTERM or SIGINT meanwhile exits at once (no job runs).

    os._exit, not sys.exit: a thread may still be stuck in native code, and interpreter
    shutdown would wait for it."""

    def leave(signum: int, _frame: object) -> None:
        log.info("%s received while waiting to restart: exiting", signal.Signals(signum).name)
        logging.shutdown()
        os._exit(0)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, leave)
    time.sleep(delay)
