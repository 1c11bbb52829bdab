"""Pacing of a replay: as fast as possible, or real time times a speed factor."""
from __future__ import annotations

import time


class Pacer:
    """Releases items at target times ``start + t / speed``, making up for late wake-ups.

    Each target is measured from the start, not from the previous release, so one late wake-up
    does not delay every later trial (the mne-lsl player's approach). ``speed=None`` (or 0)
    never waits.

    >>> pacer = Pacer(speed=None)
    >>> pacer.wait_until(10.0)  # returns at once
    0.0
    """

    def __init__(self, speed: float | None = None, clock=time.monotonic, sleep=time.sleep):
        if speed is not None and speed < 0:
            raise ValueError(f"speed must be non-negative (0 or None: as fast as possible), got {speed}")
        self.speed = speed or None
        self._clock, self._sleep = clock, sleep
        self._start = None

    def wait_until(self, t: float) -> float:
        """Block until ``t`` seconds of recording time have passed; return the lateness in seconds."""
        if self.speed is None:
            return 0.0
        if self._start is None:
            self._start = self._clock()
        target = self._start + t / self.speed
        remaining = target - self._clock()
        if remaining > 0:
            self._sleep(remaining)
        return max(0.0, self._clock() - target)
