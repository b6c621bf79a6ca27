"""Waiting for a cloud job to end."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from launch.common.errors import explained_cloud_errors


def wait_until_final(read: Callable[[], object], state_of: Callable[[object], object],
                     final: Collection, poll_seconds: float, what: str, *,
                     sleep: Callable[[float], None] = time.sleep,
                     echo: Callable[[str], None] = print):
    """Calls `read` every `poll_seconds` until the state of what it returns is in `final`,
    echoing each change of state; returns the last thing read. Cloud errors of a read become
    LaunchErrors about reading `what`."""
    last = None
    while True:
        with explained_cloud_errors(f"Reading the state of {what}"):
            current = read()
        state = state_of(current)
        if state != last:
            echo(state.name)
            last = state
        if state in final:
            return current
        sleep(poll_seconds)
