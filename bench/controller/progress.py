"""How far a sweep is, and about how long the rest will take."""
from __future__ import annotations

import time


def duration(seconds: float) -> str:
    """``40 s``, ``12 min``, ``1 h 50 min``, ``14 h``: as a person planning a night reads it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" if hours >= 10 or rest == 0 else f"{hours} h {rest} min"


class Progress:
    """The time left: the mean wall time of the points measured so far times the points still to measure (a
    point skipped on this device, or already recorded, costs nothing). Known after the first point."""

    def __init__(self, to_measure: int) -> None:
        self.left = to_measure
        self.measured = 0
        self.spent_s = 0.0
        self._started: float | None = None

    def start(self) -> str:
        """The clause for a point's "measuring" line: ``; about 12 min left`` (this point included)."""
        self._started = time.monotonic()
        if not self.measured:
            return ""
        return f"; about {duration(self.spent_s / self.measured * self.left)} left"

    def done(self, measured: bool = True) -> None:
        """The point is recorded; ``measured`` False for one the device skipped at once."""
        if measured:
            self.spent_s += time.monotonic() - self._started
            self.measured += 1
            self.left -= 1
