"""The remedy for Local's per-node split: the same Deployment, spread by the scheduler with
topologySpreadConstraints, receives even shares through the load balancer (examples/imbalance/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.cloud.network import LabNetwork
from lab.kube.manifests import load_manifests
from lab.measure.experiment import probe_load_balancer
from lab.measure.stats import chi_square

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "imbalance"
FIT_P = 0.001


@pytest.fixture(scope="module")
def lab():
    cluster = load_manifests([str(EXAMPLES / f) for f in ("nodes.yaml", "spread.yaml", "service.yaml")])
    with LabNetwork(cluster, lb_profile="fast") as network:
        yield network


def test_the_scheduler_spreads_the_replicas_two_and_two(lab):
    assert sorted(len(lab.cluster.pods_on(n.name)) for n in lab.cluster.nodes) == [2, 2]


def test_spread_replicas_get_even_shares_under_local(lab):
    service = lab.cluster.services[0]
    assert service.external_traffic_policy == "Local"
    result = probe_load_balancer(lab, service, service.ports[0], 1200, lab.client_ttl())
    counts = [result["servedBy"].get(p.name, 0) for p in lab.cluster.pods]
    _, p_even = chi_square(counts, [1 / 4] * 4)
    assert p_even > FIT_P, f"{counts} are not even (p={p_even:.2g})"
