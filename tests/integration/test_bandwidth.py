"""The bandwidth scenario, run once as a user runs it (``python -m lab run bandwidth --json --plot``), then
checked on its JSON report: the bill of a forwarded Cluster flow in bytes between nodes, what a bystander
flow keeps, whether the shaped links (not the CPU) set the rate, and, with netem, the delay of the detour.

Cluster (``lab.scenarios.bandwidth``): node-a (no pod of the Service; the bystander's sender), node-b (the
Service's one iperf3 pod), node-c (the bystander's receiver); every node's link to the underlay shaped
to 100 Mbit/s, and delayed by ``DELAY_MS`` each way where the kernel has netem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.emulation.environment import has_netem
from lab.measure.bulk import expected_goodput_mbit
from lab.scenarios import bandwidth as bw

REPO = Path(__file__).resolve().parents[2]
RATE_MBIT = 50  # well under what the userspace datapath carries on 2 cores with two flows at once
SECONDS = 3
REQUESTS = 100
DELAY_MS = 5.0
# Tolerances, stated once: a lone TCP flow's goodput within 10% of what the shaped link can carry
# (1448 payload bytes per 1514-byte frame); a forwarded byte crosses between nodes once, and headers and
# ACKs add about 7%; the extra round trip of the detour within 25% (plus 1 ms of processing) of 4 x D.
GOODPUT_TOLERANCE = 0.10
INTER_NODE_PER_BYTE = (0.95, 1.25)
EXTRA_NODE_LINK_PER_BYTE = (1.8, 2.5)
DELAY_TOLERANCE, DELAY_SLACK_MS = 0.25, 1.0

NO_NETEM = "this kernel has no netem qdisc, so links cannot carry a delay (the lab never fakes one)"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bandwidth")
    json_path, png_path = out / "bandwidth.json", out / "bandwidth.png"
    argv = [sys.executable, "-m", "lab", "run", "bandwidth", "--underlay-mbit", str(RATE_MBIT),
            "--seconds", str(SECONDS), "--requests", str(REQUESTS), "--delay-ms", str(DELAY_MS),
            "--json", str(json_path), "--plot", str(png_path)]
    budget = 300 + float(os.environ.get("NPL_LOCK_WAIT", "0"))
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=budget)
    assert done.returncode == 0, done.stderr[-2000:]
    return {"report": json.loads(json_path.read_text()), "png": png_path, "stdout": done.stdout,
            "stderr": done.stderr}


def bulk(run: dict, policy: str, entry: str) -> dict:
    return next(r for r in run["report"]["bulk"] if r["policy"] == policy and r["entry"] == entry)


def contention(run: dict, case: str) -> dict:
    return next(c for c in run["report"]["contention"] if c["case"] == case)


def test_forwarded_cluster_flow_crosses_between_nodes_once_per_byte_and_the_entry_link_twice_more(run):
    fwd, direct = bulk(run, "Cluster", bw.OTHER_NODE), bulk(run, "Cluster", bw.POD_NODE)
    assert fwd["ok"] and direct["ok"], (fwd, direct)
    low, high = INTER_NODE_PER_BYTE
    assert low <= fwd["interNodePerByte"] <= high, fwd
    extra = fwd["nodeLinkPerByte"] - direct["nodeLinkPerByte"]
    assert EXTRA_NODE_LINK_PER_BYTE[0] <= extra <= EXTRA_NODE_LINK_PER_BYTE[1], (fwd, direct)


def test_local_and_cluster_on_the_pods_node_move_no_bytes_between_nodes(run):
    for policy in ("Local", "Cluster"):
        result = bulk(run, policy, bw.POD_NODE)
        assert result["ok"] and result["bytes"] > 0, result
        assert result["interNodeBytes"] == 0, result


def test_a_lone_flow_gets_the_configured_rate_within_tolerance(run):
    expected = expected_goodput_mbit(RATE_MBIT)
    for policy in ("Cluster", "Local"):
        result = bulk(run, policy, bw.POD_NODE)
        assert abs(result["mbps"] - expected) <= GOODPUT_TOLERANCE * expected, \
            f"{policy} via {bw.POD_NODE}: {result['mbps']} Mbit/s on a {RATE_MBIT} Mbit/s link " \
            f"(TCP can carry {expected:.1f}), CPU idle {result['cpuIdlePct']}%"


def test_the_bystander_keeps_clearly_more_under_local_than_under_cluster(run):
    expected = expected_goodput_mbit(RATE_MBIT)
    detour, local = contention(run, "Cluster"), contention(run, "Local")
    by_cluster, by_local = detour["bystander"]["mbps"], local["bystander"]["mbps"]
    # Under Local the bystander shares no shaped link with the nodePort flow: it keeps the whole link.
    assert by_local >= (1 - GOODPUT_TOLERANCE) * expected, local
    # Under Cluster the detour and the bystander share node-a's uplink: together one link's worth.
    assert by_cluster + detour["nodePort"]["mbps"] <= (1 + GOODPUT_TOLERANCE) * expected, detour
    assert by_local - by_cluster >= 0.15 * expected, (detour, local)


def test_local_drops_a_bulk_flow_entering_a_node_without_the_pod(run):
    result = bulk(run, "Local", bw.OTHER_NODE)
    assert not result["ok"] and "Connection timed out" in result["error"], result
    assert result["interNodeBytes"] == 0


def test_the_forwarded_path_takes_longer_than_the_direct_one(run):
    paths = run["report"]["latency"]["paths"]
    assert all(p["failed"] == 0 for p in paths.values()), paths
    assert paths["forwarded"]["connectMs"]["p50"] > paths["direct"]["connectMs"]["p50"], paths


@pytest.mark.skipif(not has_netem(), reason=NO_NETEM)
def test_the_detour_adds_the_configured_delay_to_the_round_trip(run):
    analysis = run["report"]["latency"]["analysis"]
    assert analysis["delayPerLinkMs"] == DELAY_MS
    expected = 4 * DELAY_MS  # node-a's link twice more (in, back out), each way
    assert analysis["expectedExtraRttMs"] == expected
    assert abs(analysis["measuredExtraRttMs"] - expected) <= DELAY_TOLERANCE * expected + DELAY_SLACK_MS, analysis


def test_a_delay_the_kernel_cannot_make_is_reported_missing_not_faked(run):
    report = run["report"]
    assert report["underlay"]["delayRequestedMs"] == DELAY_MS
    if has_netem():
        assert report["underlay"]["delayMs"] == DELAY_MS
        return
    assert report["underlay"]["delayMs"] is None
    assert report["latency"]["analysis"]["expectedExtraRttMs"] is None
    assert any("no netem" in w and "no delay is faked" in w for w in report["warnings"]), report["warnings"]
    assert "no netem qdisc" in run["stdout"]


def test_the_run_prints_its_tables_and_draws_the_plot(run):
    for title in ("Bulk: iperf3", "Contention: bystander", "Latency:", "Fidelity:"):
        assert title in run["stdout"], run["stdout"]
    assert run["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = run["report"]
    assert {"underlay", "bulk", "contention", "latency", "fidelity", "machine", "warnings"} <= set(report)
    assert report["fidelity"]["goodputRatios"], report["fidelity"]
