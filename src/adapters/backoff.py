"""Retry delays shared by the adapters that reconnect or re-send."""

import random


def full_jitter(base: float, attempt: int, cap: float) -> float:
    """Exponential backoff with full jitter: uniform over [0, min(cap, base * 2**(attempt-1))].

    Randomising the whole delay spreads a fleet of workers that lost the same broker or API at
    the same instant, so they do not all come back in lockstep.
    """
    return random.uniform(0.0, min(cap, base * 2.0 ** min(attempt - 1, 30)))
