"""Progress output: a Keras progress bar at a terminal, one log line per epoch elsewhere,
and after each epoch the time the whole run still needs (RunClock).

Cloud logs (Vertex AI) and CI keep every line a progress bar redraws, so there we only log
epoch summaries.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping

import keras
from absl import logging

VERTEX_ENV_MARKERS = ("CLOUD_ML_JOB_ID",)
VERTEX_ENV_PREFIX = "AIP_"
# The values we report are already running means: the bar must show them as they are.
REPORTED_VALUES = ("loss", "accuracy", "learning_rate", "val_loss", "val_accuracy")


def on_vertex(env: Mapping[str, str] = os.environ) -> bool:
    return any(k in env for k in VERTEX_ENV_MARKERS) or any(
        k.startswith(VERTEX_ENV_PREFIX) for k in env)


def interactive(env: Mapping[str, str] = os.environ) -> bool:
    """True when a person watches a terminal: show a live progress bar."""
    return sys.stdout.isatty() and not on_vertex(env)


def format_values(values: Mapping[str, float]) -> str:
    return " - ".join(f"{k}: {v:.4g}" for k, v in values.items())


class EpochProgress:
    """Reports one epoch: call `update` after each chunk of steps, `end` once."""

    def __init__(self, title: str, steps: int, start_step: int = 0, live: bool = False):
        self._title = title
        self._steps = steps
        self._start = time.monotonic()
        self._first_step = start_step
        self._bar = None
        if live:
            print(title, flush=True)
            self._bar = keras.utils.Progbar(steps, stateful_metrics=REPORTED_VALUES)
            if start_step:
                self._bar.update(start_step)

    def update(self, step: int, values: Mapping[str, float]) -> None:
        if self._bar is not None:
            self._bar.update(step, values=list(values.items()), finalize=False)

    def end(self, values: Mapping[str, float], remaining: str = "") -> None:
        seconds = time.monotonic() - self._start
        left = f" - {remaining}" if remaining else ""
        if self._bar is not None:  # the finished bar is the epoch's record on the terminal
            self._bar.update(self._steps, values=list(values.items()), finalize=True)
            if left:
                print(remaining, flush=True)
            return
        steps_run = self._steps - self._first_step
        resumed = f" (resumed at step {self._first_step})" if self._first_step else ""
        logging.info("%s: %d steps in %.1fs%s - %s%s", self._title, steps_run, seconds, resumed,
                     format_values(values), left)


class RunClock:
    """The time the run still needs, from this process's pace since `start` (steps,
    validation and backups included: they recur every epoch)."""

    def __init__(self, total_steps: int):
        self._total = total_steps
        self._start: tuple[float, int] | None = None

    def start(self, done: int) -> None:
        """Called once, when this process begins training `done` steps into the run."""
        if self._start is None:
            self._start = (time.monotonic(), done)

    def remaining(self, done: int) -> str:
        """'about 1m 05s left' after `done` of the run's steps ('' when nothing is known)."""
        if self._start is None or done >= self._total or done <= self._start[1]:
            return ""
        started, first_done = self._start
        seconds = (time.monotonic() - started) / (done - first_done) * (self._total - done)
        return f"about {format_duration(seconds)} left"


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"
