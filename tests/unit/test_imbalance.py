"""The shares the imbalance scenario expects: per node, then per pod, under Local; per pod under Cluster."""

import pytest

from lab.scenarios.imbalance import expected_shares

PLACEMENT = {"node-a": ["a1", "a2", "a3"], "node-b": ["b1"], "node-c": []}


def test_local_splits_per_node_then_per_pod():
    shares = expected_shares(PLACEMENT, "Local")
    assert shares == pytest.approx({"a1": 1 / 6, "a2": 1 / 6, "a3": 1 / 6, "b1": 1 / 2})


def test_cluster_splits_per_pod():
    assert expected_shares(PLACEMENT, "Cluster") == pytest.approx({p: 1 / 4 for p in ("a1", "a2", "a3", "b1")})
