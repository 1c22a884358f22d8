"""Polling for a condition in tests: generous time limits, because the machine is shared."""

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll `predicate` until it holds; False if it did not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
