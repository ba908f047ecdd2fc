"""The change log's line (controllers.state.state_delta) turns the controller's state into the lab's, through
JSON, whatever changed: endpoints with hints and terminating ones, removed and reordered Service ports.
Endpoints travel as their fields' values in order; the whole state file keeps them as objects."""

from __future__ import annotations

import json
from dataclasses import fields, replace

import pytest

from controllers.state import EndpointInfo, ProxyState, apply_delta, state_delta
from lab.emulation.proxy_state import build_proxy_state
from lab.kube import addressing as addr
from lab.kube.model import ZONE_LABEL, Cluster, ContainerPort, Node, Pod, Service, ServicePort


def cluster() -> Cluster:
    nodes = [Node("node-1", 1, labels={ZONE_LABEL: "a"}), Node("node-2", 2, labels={ZONE_LABEL: "b"})]
    pods = [Pod(f"web-{i}", f"node-{i % 2 + 1}", labels={"app": "web"}, ports=(ContainerPort(8080),),
                ip=addr.pod_ip(i % 2 + 1, 2 + i), serial=i) for i in range(4)]
    services = [Service(f"svc-{i}", [ServicePort(80, 30000 + i, 8080), ServicePort(81, 31000 + i, 8080, name="b")],
                        selector={"app": "web"}) for i in range(3)]
    return Cluster(nodes=nodes, pods=pods, services=services)


def through_the_log(old: ProxyState, new: ProxyState) -> ProxyState:
    return apply_delta(old, json.loads(json.dumps(state_delta(old, new), separators=(",", ":"))))


def with_endpoints(state: ProxyState, key: str, endpoints: tuple[EndpointInfo, ...]) -> ProxyState:
    return replace(state, generation=state.generation + 1, service_ports=tuple(
        replace(sp, endpoints=endpoints) if sp.key == key else sp for sp in state.service_ports))


def test_a_new_state_arrives_whole():
    c = cluster()
    empty = replace(build_proxy_state(c, 1), service_ports=())
    state = build_proxy_state(c, 2)
    got = through_the_log(empty, state)
    assert got == state
    assert all(type(e) is EndpointInfo for sp in got.service_ports for e in sp.endpoints)


def test_hints_and_conditions_survive_as_tuples_and_flags():
    state = build_proxy_state(cluster(), 1)
    key = state.service_ports[1].key
    eps = (EndpointInfo("web-0", "node-1", "10.244.1.2", 8080, zone="a", for_zones=("a", "b"), for_nodes=("node-1",)),
           EndpointInfo("web-1", "node-2", "10.244.2.3", 8080, ready=False, serving=True, terminating=True))
    new = with_endpoints(state, key, eps)
    got = through_the_log(state, new)
    assert got == new
    moved = next(sp for sp in got.service_ports if sp.key == key).endpoints
    assert moved[0].for_zones == ("a", "b") and isinstance(moved[0].for_nodes, tuple)
    assert hash(moved[0]) == hash(eps[0])  # hashable: the compiled pieces are keyed by what they came from
    # only the changed Service port was written
    assert [sp["service"] + ":" + sp["port_name"] for sp in state_delta(state, new)["changed"]] == ["svc-0:b"]


def test_removed_and_reordered_ports():
    state = build_proxy_state(cluster(), 1)
    kept = tuple(reversed(state.service_ports[1:]))
    new = replace(state, generation=2, service_ports=kept)
    delta = state_delta(state, new)
    assert delta["changed"] == [] and delta["order"] == [sp.key for sp in kept]
    assert through_the_log(state, new) == new


def test_endpoints_are_written_as_values_in_field_order():
    c = cluster()
    empty = replace(build_proxy_state(c, 1), service_ports=())
    state = build_proxy_state(c, 2)
    written = state_delta(empty, state)["changed"][0]["endpoints"][0]
    first = state.service_ports[0].endpoints[0]
    assert list(written) == [getattr(first, f.name) for f in fields(EndpointInfo)]


def test_an_endpoint_with_a_field_it_lacks_is_refused():
    state = build_proxy_state(cluster(), 1)
    delta = json.loads(json.dumps(state_delta(replace(state, service_ports=(), generation=0), state)))
    delta["changed"][0]["endpoints"][0] = delta["changed"][0]["endpoints"][0] + ["extra"]
    with pytest.raises(ValueError):
        apply_delta(replace(state, service_ports=(), generation=0), delta)


def test_the_whole_state_file_form_still_reads():
    state = build_proxy_state(cluster(), 1)
    assert ProxyState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
