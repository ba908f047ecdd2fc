"""Errors the lab shows to a person: one line that names what is wrong and how to fix it.

The lab stands in for the Kubernetes API server, so a manifest it cannot accept is reported the way
``kubectl apply`` would report it (object, field, problem) plus the fix, on ONE line, because these
messages end up in terminals, CI logs and notebook cells where a traceback or a wrapped paragraph hides
the point. ``ManifestError`` is for a manifest (it knows the object and file); ``LabError`` is for
everything else a user can get wrong (environment, command line, names reaching a shell).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

SHOWN_MAX = 40  # characters of a bad value a message quotes
PART_MAX = 300  # characters of any one part of a message (a safety net for values quoted without shown())


def _one_line(text: str) -> str:
    # Parser messages (PyYAML's especially) span several lines; a report line must stay one line.
    return " ".join(text.split())


def shown(value: object, limit: int = SHOWN_MAX) -> str:
    """A value as a message may quote it: strings quoted, cut to ``limit`` characters, with control and
    non-ASCII characters escaped, so a newline, a terminal escape or a homoglyph ("nginx" with a
    Cyrillic "х") shows as what it is; containers only by their type, never expanded (an alias bomb
    would be)."""
    if isinstance(value, str):
        cut = value[:limit]
        text = json.dumps(cut)
        return text if len(value) <= limit else f"{text[:-1]}...\" ({len(value):,} characters)"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        text = str(value) if not isinstance(value, int) or value.bit_length() < 200 else "a huge number"
        return text[:limit]
    if isinstance(value, bytes | bytearray):
        return f"binary data ({len(value):,} bytes)"
    names = {dict: "a mapping", list: "a list", tuple: "a list", set: "a set"}
    return names.get(type(value), type(value).__name__)


def _part(text: str) -> str:
    text = "".join(c if c.isprintable() or c in " \t\n" else f"\\x{ord(c):02x}" for c in text[: PART_MAX * 4])
    return text if len(text) <= PART_MAX else text[:PART_MAX] + "..."


class ManifestError(Exception):
    """A manifest the lab refuses, as the API server would: which object, which field, why, what to do.

    ``kind`` and ``name`` may be empty for problems that belong to a file rather than an object (a YAML
    syntax error, a missing file); the message then starts with ``source``.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        field: str,
        problem: str,
        fix: str,
        source: str | None = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.field = field
        self.problem = problem
        self.fix = fix
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        kind, name, field, source = (_part(x) for x in (self.kind, self.name, self.field, self.source or ""))
        if kind:
            subject = f'{kind} "{name}"' if name else kind
            head = f"{subject} ({source})" if source else subject
        else:
            head = source or "manifests"
        problem = _part(self.problem)
        body = f"{field} {problem}" if field else problem
        return _one_line(f"{head}: {body}: {_part(self.fix)}")


@dataclass(frozen=True)
class Origin:
    """Where a manifest object came from, so any check can raise an error that names it."""

    kind: str
    name: str
    source: str | None = None

    def error(self, field: str, problem: str, fix: str) -> ManifestError:
        return ManifestError(self.kind, self.name, field, problem, fix, self.source)


class LabError(Exception):
    """A user-facing failure outside the manifests; ``str()`` is one line ending in the fix.

    ``fix`` may be left out when ``problem`` already says what to do.
    """

    def __init__(self, problem: str, fix: str = "") -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:
        return _one_line(f"{self.problem}: {self.fix}" if self.fix else self.problem)
