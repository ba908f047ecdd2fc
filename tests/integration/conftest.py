"""Integration fixtures: each module builds one real cluster (Mininet + Open vSwitch + kube-proxy app).

As in FRR's topotests, the environment is diagnosed first (root, Open vSwitch running) and the network
is always torn down, also when a test fails. Without root these tests are skipped with the reason; CI
runs them as root, where a missing tool is a failure, not a skip.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from lab.emulation.resources import RUN_ROOT, recorded_runs
from lab.kube.manifests import load_manifests


def _environment_problem() -> str | None:
    if os.geteuid() != 0:
        return "integration tests build network namespaces: run them as root"
    return None


def pytest_collection_modifyitems(config, items):
    problem = _environment_problem()
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if problem:
                item.add_marker(pytest.mark.skip(reason=problem))


NODES = ("node-a", "node-b", "node-c")
WEB_POD = """
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec: {{nodeName: {node}, containers: [{{name: web, image: nginx, ports: [{{containerPort: 8080}}]}}]}}
"""


def web_manifests(pods: dict[str, str], nodes: tuple[str, ...] = NODES) -> str:
    """Nodes, then one pod per name on its node, labelled app=web and serving on 8080: the cluster of the
    tests whose Services select app=web. A test appends its Services, the part it is about."""
    text = "\n---\n".join(f"apiVersion: v1\nkind: Node\nmetadata: {{name: {n}}}" for n in nodes)
    return text + "".join(WEB_POD.format(name=name, node=node) for name, node in pods.items())


def cluster_from_yaml(tmp_path: Path, text: str):
    path = tmp_path / "manifests.yaml"
    path.write_text(textwrap.dedent(text))
    return load_manifests([str(path)])


def lab_leftovers() -> list[str]:
    """Bridges and root-namespace interfaces with the lab's prefix, and run directories, that no running lab
    owns (other lab runs on the same machine, e.g. a developer's, are not leftovers)."""
    live_runs = [(name, res) for name, res, alive in recorded_runs() if alive]
    live_names = {n for _, res in live_runs for n in res.bridges + res.interfaces}
    left = [f"interface {n}" for n in os.listdir("/sys/class/net") if n.startswith("npl-") and n not in live_names]
    brs = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True).stdout.split()
    left += [f"bridge {b}" for b in brs if b.startswith("npl-") and b not in live_names]
    live_pids = {int(pid) for _, res in live_runs for pid in res.processes}
    left += [f"process {pid} ({cmd})" for pid, cmd in _own_mininet_shells() if pid not in live_pids]
    if os.path.isdir(RUN_ROOT):
        live_dirs = {name for name, _ in live_runs}
        left += [f"run dir {d}" for d in os.listdir(RUN_ROOT) if d.startswith("run-") and d not in live_dirs]
    return left


def _own_mininet_shells() -> list[tuple[int, str]]:
    """Mininet node shells (``mininet:<name>``) that this test process started and did not end."""
    shells = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == os.getpid() and "mininet:" in cmd:
            shells.append((int(entry), cmd))
    return shells
