"""Errors the lab shows to a person: one line that names what is wrong and how to fix it.

The lab stands in for the Kubernetes API server, so a manifest it cannot accept is reported the way
``kubectl apply`` would report it (object, field, problem) plus the fix, on ONE line, because these
messages end up in terminals, CI logs and notebook cells where a traceback or a wrapped paragraph hides
the point. ``ManifestError`` is for a manifest (it knows the object and file); ``LabError`` is for
everything else a user can get wrong (environment, command line, names reaching a shell).
"""

from __future__ import annotations

from dataclasses import dataclass


def _one_line(text: str) -> str:
    # Parser messages (PyYAML's especially) span several lines; a report line must stay one line.
    return " ".join(text.split())


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
        if self.kind:
            subject = f'{self.kind} "{self.name}"' if self.name else self.kind
            head = f"{subject} ({self.source})" if self.source else subject
        else:
            head = self.source or "manifests"
        body = f"{self.field} {self.problem}" if self.field else self.problem
        return _one_line(f"{head}: {body}: {self.fix}")


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
