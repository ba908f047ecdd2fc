"""Reading manifests as ``kubectl apply`` does: ``-f`` files, folders (``-R`` for sub-folders) and ``-``
(standard input), YAML or JSON, multi-document streams, ``kind: List``; ``-k`` renders a kustomization.

Files are read in the order given; a folder contributes its ``*.yaml``, ``*.yml`` and ``*.json`` files in
name order (with ``recursive``, then its sub-folders', depth first, in name order). A file named on the
command line is read whatever its extension, as kubectl does. ``kustomization.yaml`` is never a manifest:
in a folder it is skipped with a warning that points to ``-k``. Each object becomes a ``Doc`` that
remembers where it came from, spelled as the user typed it, so every later message names it.

Input is untrusted (users paste YAML from anywhere), so reading is bounded before anything is built:
a file is at most ``MAX_INPUT_BYTES``; binary and non-UTF-8 input is refused with the offset of the
first bad byte; a YAML stream is first walked as parser events (cheap, iterative, in C) to refuse
nesting deeper than ``MAX_DEPTH`` (libyaml's composer recurses and would crash the interpreter),
aliases that expand to more than ``MAX_EXPANDED_NODES`` nodes (a "billion laughs" bomb), numbers of more
than ``MAX_NUMBER_DIGITS`` digits and keys defined twice in one mapping (the API server refuses those
too). Only then is it loaded, with PyYAML's C loader where present (about 6x faster than the pure-Python
one on a 2 MB install manifest). Every failure is one ``ManifestError`` line naming the source.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import yaml

from lab.errors import ManifestError, shown
from lab.kube.manifests.fields import type_name

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

STDIN = "-"
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
MAX_INPUT_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 100  # the deepest real manifests (CRD schemas) nest about 35 levels
MAX_EXPANDED_NODES = 2_000_000  # a 2 MB install manifest has about 80,000
MAX_NUMBER_DIGITS = 40  # nothing in Kubernetes is a number this long; Python refuses ints past 4,300 digits
KIND_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]{0,62}")
NUMBER = re.compile(r"[-+]?(0[xob])?[0-9_.:a-fA-F]+([eE][-+]?[0-9]+)?")
KUBECTL_ADVICE = (
    "install kubectl (https://kubernetes.io/docs/tasks/tools/, or your distribution's kubectl package), "
    "or render it yourself: kustomize build DIR | python -m lab apply -f -"
)


@dataclass(frozen=True)
class Doc:
    kind: str
    body: dict[str, Any]
    source: str


@dataclass(frozen=True)
class Inputs:
    """What to read, as ``kubectl apply`` takes it: ``-f`` paths (``-`` is standard input), ``-R``, ``-k``."""

    files: Sequence[str] = ()
    recursive: bool = False
    kustomizations: Sequence[str] = ()
    stdin: IO[str] | None = None  # None: sys.stdin


def read_inputs(inputs: Inputs) -> tuple[list[Doc], list[str]]:
    """Every object of the inputs in order, and warnings about what was skipped."""
    if not inputs.files and not inputs.kustomizations:
        raise ManifestError(
            "", "", "", "no manifest files given", "pass YAML files or folders with -f, or a kustomization with -k"
        )
    if list(inputs.files).count(STDIN) > 1:
        raise ManifestError("", "", "", "standard input (-f -) is named twice", "name it once", STDIN)
    warnings: list[str] = []
    docs: list[Doc] = []
    for raw in inputs.files:
        for source in _expand(str(raw), inputs.recursive, warnings):
            docs.extend(parse(_read_source(source, inputs.stdin), source))
    for folder in inputs.kustomizations:
        source = f"kustomization {folder}"
        docs.extend(parse(render_kustomization(str(folder)), source))
    return docs, warnings


def _expand(raw: str, recursive: bool, warnings: list[str]) -> list[str]:
    """The files ``raw`` stands for, spelled from ``raw`` as typed (``os.path.join`` keeps ``./`` and ``..``)."""
    if raw == STDIN:
        return [STDIN]
    if os.path.isfile(raw):
        return [raw]
    if not os.path.isdir(raw):
        raise ManifestError("", "", "", "does not exist", "check the path", raw)
    found = _folder_files(raw, recursive, warnings)
    if not found:
        has_folders = any(os.path.isdir(os.path.join(raw, name)) for name in os.listdir(raw))
        if has_folders and not recursive:
            raise ManifestError(
                "", "", "", "folder holds no *.yaml, *.yml or *.json files, only sub-folders",
                "add -R (--recursive) to read the sub-folders too", raw,
            )
        raise ManifestError("", "", "", "folder holds no *.yaml, *.yml or *.json files", "check the path", raw)
    return found


def _folder_files(folder: str, recursive: bool, warnings: list[str]) -> list[str]:
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        raise ManifestError("", "", "", f"cannot be listed ({exc.strerror})", "check the permissions", folder) from exc
    files: list[str] = []
    folders: list[str] = []
    for name in entries:
        path = os.path.join(folder, name)
        if os.path.isdir(path):
            folders.append(path)
        elif name in KUSTOMIZATION_FILES:
            warnings.append(
                f"{path}: skipped: a kustomization is not a manifest; to render it, use -k {folder}"
            )
        elif os.path.splitext(name)[1] in MANIFEST_SUFFIXES and os.path.isfile(path):
            files.append(path)
    if recursive:
        for sub in folders:
            files.extend(_folder_files(sub, True, warnings))
    return files


def _read_source(source: str, stdin: IO[str] | None) -> str:
    if source == STDIN:
        stream = stdin if stdin is not None else sys.stdin
        raw = getattr(stream, "buffer", None)
        data = raw.read(MAX_INPUT_BYTES + 1) if raw is not None else stream.read(MAX_INPUT_BYTES + 1)
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        return decode(data, "standard input")
    try:
        with open(source, "rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise ManifestError("", "", "", f"cannot be read ({exc.strerror})", "check the file", source) from exc
    return decode(data, source)


def decode(data: bytes, source: str) -> str:
    """UTF-8 text, or one line saying why not (too big, binary, not UTF-8) and where."""
    if len(data) > MAX_INPUT_BYTES:
        raise ManifestError(
            "", "", "", f"is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB", "split it into smaller files", source
        )
    nul = data.find(b"\0")
    if nul >= 0:
        raise ManifestError(
            "", "", "", f"is binary, not text (a NUL byte at offset {nul})", "pass YAML or JSON manifests", source
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ManifestError(
            "", "", "", f"line {line}: is not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})",
            "save the file as UTF-8", source,
        ) from exc
    return text.removeprefix("\ufeff")


def render_kustomization(folder: str) -> str:
    """``kubectl kustomize DIR``: the real tool, so overlays, patches and generators mean what they mean."""
    if not os.path.isdir(folder):
        raise ManifestError("", "", "", "does not exist or is not a folder", "pass the folder that holds "
                            "kustomization.yaml to -k", folder)
    if not any(os.path.isfile(os.path.join(folder, name)) for name in KUSTOMIZATION_FILES):
        raise ManifestError("", "", "", "holds no kustomization.yaml", "pass a kustomization folder to -k, "
                            "or plain manifests to -f", folder)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ManifestError("", "", "", "-k needs kubectl to render the kustomization, and kubectl is not "
                            "installed", KUBECTL_ADVICE, folder)
    try:
        done = subprocess.run([kubectl, "kustomize", folder], capture_output=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise ManifestError("", "", "", "kubectl kustomize took more than 60 s", "check the kustomization "
                            "(remote bases are fetched from the network)", folder) from exc
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"]
        raise ManifestError("", "", "", f"kubectl kustomize failed: {shown(detail[-1], 200)}",
                            "fix the kustomization (kubectl kustomize DIR shows the same)", folder)
    return decode(done.stdout, f"kustomization {folder}")


# --- parsing -------------------------------------------------------------------------------------------


def parse(text: str, source: str) -> list[Doc]:
    """The objects of one YAML or JSON stream."""
    if text.lstrip().startswith("{"):  # kubectl's rule: a stream that opens with '{' is JSON
        bodies = [_parse_json(text, source)]
    else:
        check_yaml(text, source)
        try:
            bodies = list(yaml.load_all(text, Loader=Loader))
        except yaml.YAMLError as exc:
            raise _yaml_error(exc, source) from exc
        except (ValueError, OverflowError, TypeError, RecursionError) as exc:
            # e.g. a timestamp that is no date (2024-13-45): the constructor raises, not the parser
            raise ManifestError("", "", "", f"YAML value cannot be read: {shown(str(exc), 80)}",
                                "quote the value to make it a string", source) from exc
    docs: list[Doc] = []
    for number, body in enumerate(bodies, start=1):
        if body is not None:
            docs.extend(_unpack(body, f"document {number}", source))
    return docs


def _parse_json(text: str, source: str) -> Any:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError("", "", "", f"line {exc.lineno}, column {exc.colno}: JSON syntax error: {exc.msg}",
                            "fix the JSON there", source) from exc
    except RecursionError as exc:
        raise ManifestError("", "", "", f"JSON is nested deeper than {MAX_DEPTH} levels",
                            "no Kubernetes object nests this deep: check the file", source) from exc
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise ManifestError("", "", "", f"JSON value cannot be read: {shown(str(exc), 80)}",
                            "no Kubernetes field holds such a number: check the file", source) from exc
    _check_depth(body, source)
    return body


def _check_depth(body: Any, source: str) -> None:
    stack = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ManifestError("", "", "", f"is nested deeper than {MAX_DEPTH} levels",
                                "no Kubernetes object nests this deep: check the file", source)
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def check_yaml(text: str, source: str) -> None:
    """Walk the parser's events once: refuse what would crash, hang or flood the loader, and duplicate keys."""
    depth = 0
    expanded = 0
    anchors: dict[str, int] = {}
    stack: list[list] = []  # per open collection: [size, anchor, keys (mappings) or None, expecting a key]

    def fail(event: yaml.Event, problem: str, fix: str) -> ManifestError:
        mark = event.start_mark
        return ManifestError("", "", "", f"line {mark.line + 1}, column {mark.column + 1}: {problem}", fix, source)

    def node_done(size: int, key: str | None) -> None:
        if not stack:
            return
        parent = stack[-1]
        parent[0] += size
        if parent[2] is not None:
            if parent[3] and key is not None:
                if key in parent[2]:
                    raise fail(event, f'key "{shown(key, 40)}" is defined twice in one mapping',
                               "keep one of them (the API server refuses duplicate keys)")
                parent[2].add(key)
            parent[3] = not parent[3]

    try:
        for event in yaml.parse(text, Loader=Loader):
            if isinstance(event, yaml.ScalarEvent):
                value = event.value
                if event.style is None and len(value) > MAX_NUMBER_DIGITS and NUMBER.fullmatch(value):
                    raise fail(event, f"a number of {len(value)} characters ({shown(value, 20)})",
                               "no Kubernetes field holds such a number: quote it if it is text")
                if event.anchor:
                    anchors[event.anchor] = 1
                expanded += 1
                node_done(1, value)
            elif isinstance(event, yaml.AliasEvent):
                size = anchors.get(event.anchor, 1)
                expanded += size
                if expanded > MAX_EXPANDED_NODES:
                    raise fail(event, f"aliases expand to more than {MAX_EXPANDED_NODES:,} values "
                               '(a "billion laughs" bomb?)', "write the values out instead of nesting aliases")
                node_done(size, None)
            elif isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise fail(event, f"nesting is deeper than {MAX_DEPTH} levels",
                               "no Kubernetes object nests this deep: check the file")
                is_map = isinstance(event, yaml.MappingStartEvent)
                stack.append([1, event.anchor, set() if is_map else None, True])
                expanded += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
                size, anchor, _, _ = stack.pop()
                if anchor:
                    anchors[anchor] = size
                node_done(size, None)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, source) from exc


def _yaml_error(exc: yaml.YAMLError, source: str) -> ManifestError:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    detail = getattr(exc, "problem", None) or str(exc)
    return ManifestError(
        "", "", "", f"{where}YAML syntax error: {shown(detail, 120)}", "fix the YAML there (indentation, ':' or '-')",
        source,
    )


def _unpack(body: Any, what: str, source: str) -> Iterator[Doc]:
    """One document, or the items of a ``kind: List`` (what ``kubectl get -o yaml`` prints)."""
    if not isinstance(body, dict):
        raise ManifestError(
            "", "", "", f"{what} is {type_name(body)}, not a Kubernetes object", "write a mapping with kind:", source
        )
    kind = body.get("kind")
    if kind is None or kind == "":
        raise ManifestError("", "", "", f"{what} has no kind", "add kind:, e.g. kind: Deployment", source)
    if not isinstance(kind, str) or not KIND_NAME.fullmatch(kind):
        raise ManifestError("", "", "", f"{what} has kind {shown(kind)}, which is no kind name",
                            "write kind: as a word, e.g. kind: Deployment", source)
    if kind != "List":
        yield Doc(kind, body, source)
        return
    items = body.get("items") or []
    if not isinstance(items, list):
        raise ManifestError(
            "", "", "", f"{what} (kind List) has items that are not a list", "write items: as a list of objects", source
        )
    for number, item in enumerate(items):
        if isinstance(item, dict) and item.get("kind") == "List":
            raise ManifestError("", "", "", f"{what} items[{number}] is a List inside a List",
                                "put its items in the outer List", source)
        yield from _unpack(item, f"{what} items[{number}]", source)
