"""The folders of lab/ are layers, and imports run one way (down): the Kubernetes model knows nothing of
the network, the network nothing of the cloud, none of them anything of measuring, scenarios or the CLI.
A newcomer can then read any layer with only the ones below it in mind."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[2] / "lab"
# Lower layers first; a module may import its own layer and any layer before it.
LAYERS = ["errors", "polling", "kube", "emulation", "ingress", "cloud", "measure", "scenarios", "api", "shell", "cli"]
OUTSIDE = {"topologies": "emulation", "controllers": "emulation"}  # what they may be imported from


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] in OUTSIDE:
        return parts[0]
    if parts[0] != "lab" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else parts[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            if node.module == "lab":
                found += [f"lab.{alias.name}" for alias in node.names]
    return found


MODULES = sorted(p for p in LAB.rglob("*.py") if p.name != "__main__.py")


def test_every_module_belongs_to_a_layer():
    for path in MODULES:
        rel = path.relative_to(LAB).parts
        top = rel[0].removesuffix(".py")
        assert top in LAYERS or top == "__init__", f"lab/{'/'.join(rel)} is in no layer: add it to LAYERS"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(LAB)))
def test_imports_run_down_the_layers(path):
    own = path.relative_to(LAB).parts[0].removesuffix(".py")
    if own == "__init__":
        return
    for module in _imports(path):
        layer = _layer(module)
        if layer is None:
            continue
        if layer in OUTSIDE:
            assert LAYERS.index(own) >= LAYERS.index(OUTSIDE[layer]), f"{path.name} imports {module}"
            continue
        assert LAYERS.index(layer) <= LAYERS.index(own), (
            f"lab/{'/'.join(path.relative_to(LAB).parts)} ({own}) imports {module} ({layer}), a layer above it")
