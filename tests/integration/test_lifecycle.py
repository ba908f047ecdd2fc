"""The lab as a user meets it from the shell: it cleans up after itself, after Ctrl-C and after a crash
(``python -m lab clean``), refuses bad input before building anything, and runs one network at a time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lab.cloud.network import LabNetwork
from lab.emulation.resources import RUN_ROOT
from lab.kube.manifests import load_manifests
from lab.polling import wait_for
from tests.integration.conftest import lab_leftovers

REPO = Path(__file__).resolve().parents[2]
SEED = str(REPO / "examples" / "seed")


QUEUE_FREE_ENV = {k: v for k, v in os.environ.items() if k != "NPL_LOCK_WAIT"}


def lab_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lab", *args]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(lab_cmd(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def running_lab_has_servers() -> bool:
    """A run directory whose pod servers are up: the network is fully built."""
    if not os.path.isdir(RUN_ROOT):
        return False
    return any(os.path.exists(os.path.join(RUN_ROOT, d, "workload.ready"))
               for d in os.listdir(RUN_ROOT) if d.startswith("run-"))


@pytest.fixture(autouse=True)
def nothing_left_before_and_after():
    assert lab_leftovers() == [], "an earlier test left the lab behind"
    yield
    assert lab_leftovers() == []


def test_default_scenario_writes_the_json_contract(tmp_path):
    out = tmp_path / "report.json"
    done = subprocess.run(lab_cmd("--requests", "20", "--json", str(out)), cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert set(report) >= {"client", "nodes", "pods", "results"}
    assert len(report["results"]) == 6  # 3 nodes x (Cluster, Local)
    keys = {"service", "policy", "nodePort", "via", "node", "requests", "ok", "failed", "servedBy",
            "sourcesSeen", "nodeHops", "interNodeBytes", "latencyMs"}
    for result in report["results"]:
        assert keys <= set(result)
        assert set(result["latencyMs"]) >= {"p50", "p95"}
    assert "Extra hop" in done.stdout and "Lost client IP" in done.stdout


def test_ctrl_c_tears_everything_down():
    proc = start("--requests", "5000")
    wait_for(running_lab_has_servers, timeout=60, what="the lab to be up")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err


def test_clean_removes_what_a_killed_run_left_behind():
    proc = start("--requests", "5000")
    wait_for(running_lab_has_servers, timeout=60, what="the lab to be up")
    proc.kill()
    proc.wait(timeout=10)
    assert lab_leftovers(), "a killed run should have left its network behind"
    done = subprocess.run(lab_cmd("clean"), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout
    assert lab_leftovers() == []


def test_a_second_network_is_refused_while_one_runs():
    proc = start("--requests", "5000")
    try:
        wait_for(running_lab_has_servers, timeout=60, what="the lab to be up")
        second = subprocess.run(lab_cmd("--requests", "1"), cwd=REPO, capture_output=True, text=True,
                                timeout=60, env=QUEUE_FREE_ENV)
        assert second.returncode == 1
        assert "another lab network is running" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)


def test_bad_manifest_is_one_line_and_builds_nothing(tmp_path):
    bad = tmp_path / "svc.yaml"
    bad.write_text((REPO / "examples" / "seed" / "service.yaml").read_text().replace("30007", "40000"))
    done = subprocess.run(lab_cmd("apply", "-f", str(REPO / "examples" / "seed" / "nodes.yaml"),
                                  "-f", str(REPO / "examples" / "seed" / "app.yaml"), "-f", str(bad)),
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "nodePort" in lines[0] and "40000" in lines[0], lines


def test_a_finished_network_leaves_nothing_behind(tmp_path):
    """Every interface, bridge, run directory and Mininet shell of a network is gone once it stops."""
    with LabNetwork(load_manifests([SEED])):
        assert lab_leftovers() == []  # a live run's resources are not leftovers
    assert lab_leftovers() == []
