"""The one way the lab waits: poll a condition until a deadline, and say what was last seen if it fails."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from lab.errors import LabError


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.02,
             last: Callable[[], Any] | None = None) -> Any:
    """Return ``check()``'s first truthy value; raise ``LabError`` naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    value = None
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            seen = last() if last else value
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what} (last seen: {seen!r})")
        time.sleep(interval)
