"""Reading manifests as ``kubectl apply -f`` does: files and folders, multi-document YAML, ``kind: List``.

Files are read in the order given; a folder contributes its ``*.yaml`` and ``*.yml`` files (not
sub-folders) in name order. Each object becomes a ``Doc`` that remembers the path it came from, as the
user typed it, so every later message can name it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lab.errors import ManifestError
from lab.kube.manifests.fields import type_name


@dataclass(frozen=True)
class Doc:
    kind: str
    body: dict[str, Any]
    source: str


def expand(paths: Sequence[str | Path]) -> list[Path]:
    if not paths:
        raise ManifestError(
            "", "", "", "no manifest files given", "pass YAML files or folders, e.g. examples/seed"
        )
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                raise ManifestError(
                    "", "", "", "folder has no *.yaml or *.yml files", "check the path", str(raw)
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise ManifestError("", "", "", "does not exist", "check the path", str(raw))
    return files


def read_documents(path: Path) -> list[Doc]:
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError("", "", "", f"cannot be read ({exc})", "check the file", source) from exc
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from exc
    docs: list[Doc] = []
    for number, body in enumerate(documents, start=1):
        if body is not None:
            docs.extend(_unpack(body, f"document {number}", source))
    return docs


def _yaml_error(exc: yaml.YAMLError, source: str) -> ManifestError:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    detail = getattr(exc, "problem", None) or str(exc)
    return ManifestError(
        "",
        "",
        "",
        f"{where}YAML syntax error: {detail}",
        "fix the YAML there (indentation, ':' or '-')",
        source,
    )


def _unpack(body: Any, what: str, source: str) -> Iterator[Doc]:
    """One document, or the items of a ``kind: List``."""
    if not isinstance(body, dict):
        raise ManifestError(
            "",
            "",
            "",
            f"{what} is {type_name(body)}, not a Kubernetes object",
            "write a mapping with kind:",
            source,
        )
    kind = body.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ManifestError(
            "", "", "", f"{what} has no kind", "add kind: Node, Pod, Deployment or Service", source
        )
    if kind != "List":
        yield Doc(kind, body, source)
        return
    items = body.get("items") or []
    if not isinstance(items, list):
        raise ManifestError(
            "",
            "",
            "",
            f"{what} (kind List) has items that are not a list",
            "write items: as a list of objects",
            source,
        )
    for number, item in enumerate(items):
        yield from _unpack(item, f"{what} items[{number}]", source)
