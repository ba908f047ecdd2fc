"""Python's cyclic garbage collector kept off the compiled programs.

A 10,000-Service state is about four million small objects (flows, their match and action tuples,
groups), all acyclic: reference counting frees whatever an update replaces. The cyclic collector
cannot know that; while an update builds them it traverses them again and again (each full pass
over a grown heap), and measured in this process that was two thirds of the update: installing 10,000
Services took 9.5 s with it and 3.1 s without (bench.control_plane's state, 2 cores).

So an update runs with the collector off. One that built many objects then moves everything the
process holds into the permanent generation (``gc.freeze``), which the collector never traverses; a
small one (a pod change) leaves its few objects to it as usual, so nothing of it is delayed by a
freeze. The price: cyclic garbage that happens to exist at the moment of a freeze is never collected.
The controller makes little (a caught exception's frames), freezes only after large updates, and
``gc.get_freeze_count()`` in its log says how much is frozen. (An earlier version also forced a full
collection before every update; that is not needed and costs a pod change tens of milliseconds.)
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
FREEZE_AT = 20_000  # flows and groups touched by one update: past this, what it built is frozen


@contextmanager
def paused() -> Iterator[None]:
    """The collector off for a block that builds many acyclic objects and keeps few of them (the lab
    building a 10,000-Service state and its change-log line: 0.95 s with it, 0.65 s without); no freeze."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def without_collector(update: Callable[[], T], size: Callable[[T], int]) -> tuple[T, bool]:
    """``update()`` with the cyclic collector off; (its result, whether the heap was frozen after it)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        result = update()
        frozen = size(result) >= FREEZE_AT
        if frozen:
            gc.freeze()
        return result, frozen
    finally:
        if enabled:
            gc.enable()
