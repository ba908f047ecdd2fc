"""The manifest loader, fuzzed: whatever it is fed, it answers with a cluster or one ``ManifestError`` line.

Three generators: arbitrary bytes and text (the parser's edge), YAML-looking text built from the tokens
that break parsers (anchors, aliases, tags, flow brackets, document markers), and valid manifests with
one to three fields replaced by values of any type (the API-server-side checks). Every example runs
under a deadline, so a hang or a super-linear blow-up fails the test too.
"""

from __future__ import annotations

import copy
import os
from datetime import timedelta

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.errors import ManifestError
from lab.kube.manifests import build_cluster
from lab.kube.manifests.reader import decode, parse

# NPL_FUZZ_EXAMPLES=5000 for a longer hunt; no example database, so the suite leaves nothing behind.
FUZZ = settings(max_examples=int(os.environ.get("NPL_FUZZ_EXAMPLES", "150")), deadline=timedelta(seconds=3),
                database=None, suppress_health_check=[HealthCheck.too_slow])

BASE = [
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "labels": {"zone": "a"}},
     "spec": {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}},
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-b"}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
     "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
              "template": {"metadata": {"labels": {"app": "web"}},
                           "spec": {"containers": [{"name": "app", "image": "nginx",
                                                    "ports": [{"containerPort": 8080, "name": "http"}]}],
                                    "tolerations": [{"key": "dedicated", "operator": "Exists"}],
                                    "affinity": {"podAntiAffinity": {
                                        "preferredDuringSchedulingIgnoredDuringExecution": [
                                            {"weight": 10, "podAffinityTerm": {
                                                "topologyKey": "kubernetes.io/hostname",
                                                "labelSelector": {"matchLabels": {"app": "web"}}}}]}},
                                    "topologySpreadConstraints": [
                                        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                                         "labelSelector": {"matchLabels": {"app": "web"}}}]}}}},
    {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": "shop"},
     "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
              "template": {"metadata": {"labels": {"app": "db"}},
                           "spec": {"containers": [{"name": "db", "image": "postgres"}]}}}},
    {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
     "spec": {"selector": {"matchLabels": {"app": "agent"}},
              "template": {"metadata": {"labels": {"app": "agent"}},
                           "spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                    "containers": [{"name": "a", "image": "agent"}]}}}},
    {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
     "metadata": {"name": "web", "namespace": "shop"},
     "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 3, "maxReplicas": 5}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
     "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "web"},
              "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "shop"},
     "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "b"}},
]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


PATHS = [(doc, path) for doc, body in enumerate(BASE) for path in _paths(body) if path]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True),
    st.text(max_size=80), st.sampled_from(["", "None", "0", "-1", "65536", "web", "a" * 300, "Exists", "Local",
                                           "ClusterIP", "NodePort", "TCP", "UDP", "List", "x;rm -rf /", "ngin\u0445",
                                           "line\nbreak", "\x1b[31m", "kubernetes.io/hostname"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=12) | st.sampled_from(["name", "kind", "port", "key", "items"]), inner, max_size=4),
    max_leaves=12)


def _mutated(mutations: list[tuple[int, object]]) -> list[dict]:
    docs = copy.deepcopy(BASE)
    for index, value in mutations:
        doc, path = PATHS[index % len(PATHS)]
        parent = docs[doc]
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation replaced this branch
    return docs


def _load(text: str) -> None:
    try:
        build_cluster(parse(text, "fuzz.yaml"))
    except ManifestError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 1200, message


def test_the_base_set_is_valid():
    cluster = build_cluster(parse(yaml.safe_dump_all(BASE), "base.yaml"))
    assert len(cluster.pods) == 3 + 2 + 1 and len(cluster.services) == 2  # no agent on the tainted node-a


@FUZZ
@given(st.lists(st.tuples(st.integers(min_value=0), values), min_size=1, max_size=3))
def test_wrong_values_anywhere_give_one_line(mutations):
    _load(yaml.safe_dump_all(_mutated(mutations)))


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data):
    try:
        _load(decode(data, "fuzz.yaml"))
    except ManifestError as exc:
        assert "\n" not in str(exc)


TOKENS = ["&a ", "*a", "&b ", "*b", "!!binary ", "!!set ", "!!str ", "!!python/object ", "? ", ": ", "- ", "[", "]",
          "{", "}", ",", "\n", "\n  ", "---\n", "...\n", "kind: ", "Pod", "List", "items:", "metadata:", "name: ",
          "<<: ", "'", '"', "#", "%YAML 1.1\n", "9" * 50, "0x1F", "2024-13-45", "~", "\t", "|\n  ", ">-\n  "]


@FUZZ
@given(st.lists(st.sampled_from(TOKENS) | st.text(max_size=6), max_size=60))
def test_yaml_looking_text(parts):
    _load("".join(parts))
