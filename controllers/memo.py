"""Values remembered per object, by the object's identity (pure bookkeeping, no I/O).

Where the same object reaches a function many times (a Service port compiled for ten nodes, a flow or
group sent to ten bridges), hashing its fields again costs more than what is remembered; an id hashes
at once. The object is kept beside its value, so its id cannot be taken by another object while the
entry lives; a full memo starts again, so churn never grows one for ever.
"""

from __future__ import annotations

from typing import Any

LIMIT = 1 << 18  # entries


class ByIdentity:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._held: dict[tuple[int, Any], tuple[object, Any]] = {}

    def get(self, obj: object, tag: Any = None) -> Any:
        """What was remembered for this very object (and ``tag``), or None."""
        held = self._held.get((id(obj), tag))
        return held[1] if held is not None and held[0] is obj else None

    def put(self, obj: object, value: Any, tag: Any = None) -> Any:
        if len(self._held) >= self.limit:
            self._held.clear()
        self._held[(id(obj), tag)] = (obj, value)
        return value

    def __len__(self) -> int:
        return len(self._held)
