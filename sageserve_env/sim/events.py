"""The simulator's event queue: one owner of pending events, one way to add them."""

from __future__ import annotations

import math
from bisect import insort
from itertools import count
from typing import Protocol


class EventTarget(Protocol):
    """Something that acts at a scheduled time; bumping ``version`` cancels what it scheduled."""

    version: int

    def on_event(self, now: float) -> None: ...


class EventQueue:
    """Pending (time, sequence number, target, target's version) entries, earliest first.

    A sorted list rather than a heap: it holds about one entry per busy instance, so an
    insertion (bisect, then a short memmove) plus a pop from the front cost fewer tuple
    comparisons than a heap push and pop. Entries at the same time run in the order pushed.
    """

    __slots__ = ("_pending", "_seq")

    def __init__(self) -> None:
        self._pending: list = []
        self._seq = count()

    def push(self, t: float, target: EventTarget) -> None:
        """Call ``target.on_event(t)`` at ``t`` unless ``target.version`` changes before then."""
        insort(self._pending, (t, next(self._seq), target, target.version))

    def run_before(self, t: float) -> None:
        """Run every event scheduled before ``t`` (strictly), in time order."""
        pending = self._pending
        while pending and pending[0][0] < t:
            at, _, target, version = pending.pop(0)
            if version == target.version:
                target.on_event(at)

    def run_through(self, t: float) -> None:
        """Run every event scheduled at or before ``t``."""
        self.run_before(math.nextafter(t, math.inf))

    def __len__(self) -> int:
        return len(self._pending)
