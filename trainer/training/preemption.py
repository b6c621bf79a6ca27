"""Preemption: SIGTERM (Vertex AI Spot, GCE maintenance, TPU preemption) saves and exits.

Those platforms send SIGTERM and allow a short grace period before they kill the process. The
handler only sets a flag; the training loop looks at it between chunks of steps, saves a backup
at that step and stops, so the job resumes exactly where it stopped. Under multi-worker
training the workers agree (a sum over all of them) so that all save at the same step, also
when only one machine was told to stop.
"""

from __future__ import annotations

import signal
import sys
import threading

# The conventional exit status of a process ended by SIGTERM (128 + 15): Vertex AI and shells
# read it as "terminated", not as a failure of the job's own making.
EXIT_PREEMPTED = 143


class Preempted(Exception):  # noqa: N818 - an event, not an error
    """Raised by the loop after it saved a backup on SIGTERM."""

    def __init__(self, step: int):
        super().__init__(f"stopped by SIGTERM: backup saved at step {step}; rerun the same "
                         "command to resume")
        self.step = step


class StoppedBySigterm(Exception):  # noqa: N818 - an event, not an error
    """SIGTERM outside the training loop (decoding, caching, evaluation, export)."""

    def __init__(self):
        super().__init__("stopped by SIGTERM outside training (what was being written is "
                         "left unfinished and will be redone; the previous export, backups "
                         "and caches are intact); rerun the same command to finish")


# Set by the handler of stop_on_sigterm_between_steps; never cleared: the process is ending.
_sigterm_received = threading.Event()


def stop_on_sigterm_between_steps() -> None:
    """SIGTERM raises StoppedBySigterm in the main thread at the next Python instruction.

    Outside the loop (which saves a backup instead, see PreemptionWatch) nothing is worth
    saving, and everything written is safe to abandon: feature caches are marked complete
    last, exports are written beside their target and swapped in whole.

    Python drops an exception raised in a garbage-collector or weakref callback (jax, when
    installed, adds one) after printing it as "Exception ignored"; the stop would be lost
    and a half-written export swapped in. So the handler also sets a flag that the commit
    points check (raise_if_sigterm_received) and the training loop starts from, and such a
    dropped stop is not printed.
    """
    def stop(signum, frame):
        del signum, frame
        _sigterm_received.set()
        raise StoppedBySigterm()

    signal.signal(signal.SIGTERM, stop)
    sys.unraisablehook = _not_reporting_stops(sys.unraisablehook)


def _not_reporting_stops(report):
    def unraisable(info):
        if not isinstance(info.exc_value, StoppedBySigterm):
            report(info)
    return unraisable


def raise_if_sigterm_received() -> None:
    """Called before a write is made visible (a rename, a completion mark): a stop that
    Python dropped (see stop_on_sigterm_between_steps) still stops the job there."""
    if _sigterm_received.is_set():
        raise StoppedBySigterm()


class PreemptionWatch:
    """Catches SIGTERM while training (restores the previous handler on `close`)."""

    def __init__(self):
        self._signalled = threading.Event()
        if _sigterm_received.is_set():  # a stop dropped before training began
            self._signalled.set()
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        del signum, frame
        self._signalled.set()

    def requested_here(self) -> bool:
        """Whether this process got SIGTERM."""
        return self._signalled.is_set()

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None
