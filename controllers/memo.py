"""Values remembered per object, by the object's identity (pure bookkeeping, no I/O).

Where the same object reaches a function many times (a Service port compiled for ten nodes, a flow or
group sent to ten bridges), hashing its fields again costs more than what is remembered; an id hashes
at once. The object is kept beside its value, so its id cannot be taken by another object while the
entry lives; a full memo starts again, so churn never grows one for ever.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

LIMIT = 1 << 18  # entries per tag


class ByIdentity:
    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._tables: dict[Any, dict[int, tuple[object, Any]]] = {}  # tag -> id -> (the object, its value)

    def get(self, obj: object, tag: Any = None) -> Any:
        """What was remembered for this very object (and ``tag``), or None."""
        held = self._tables.get(tag, {}).get(id(obj))
        return held[1] if held is not None and held[0] is obj else None

    def put(self, obj: object, value: Any, tag: Any = None) -> Any:
        table = self._tables.setdefault(tag, {})
        if len(table) >= self.limit:
            table.clear()
        table[id(obj)] = (obj, value)
        return value

    def values(self, objs: Iterable, make: Callable[[Any], Any], tag: Any = None) -> list:
        """Each object's value, made by ``make(obj)`` where none is remembered: one loop for a buffer of
        50,000 messages, where a call per object cost a tenth of a second."""
        table = self._tables.setdefault(tag, {})
        get, out = table.get, []
        append = out.append
        for obj in objs:
            held = get(id(obj))
            if held is not None and held[0] is obj:
                append(held[1])
            else:
                append(self.put(obj, make(obj), tag))  # (a full table is cleared in place: get stays valid)
        return out

    def __len__(self) -> int:
        return sum(len(t) for t in self._tables.values())
