"""The incremental programs equal a full compile after every change, and the messages made from what an
update touched turn the switch's old program into the new one (controllers.incremental, diff_touched)."""

from __future__ import annotations

import copy
import random

import pytest

from controllers import incremental as incremental_module
from controllers.diff import Changes, diff, diff_touched
from controllers.incremental import IncrementalPrograms
from controllers.pipeline import Program, compile_state, group_id
from lab.emulation.proxy_state import build_proxy_state
from lab.kube import addressing as addr
from lab.kube.model import Cluster, ContainerPort, Node, Pod, Service, ServicePort

APPS = ("web", "api", "db")


def apply(program: Program, changes: Changes) -> Program:
    """What a switch holds after the messages: OpenFlow's add/modify/delete on a copy of ``program``."""
    out = Program(dict(program.flows), dict(program.groups))
    for group in changes.add_groups + changes.modify_groups:
        out.groups[group.group_id] = group
    for flow in changes.add_flows + changes.modify_flows:
        out.flows[flow.key] = flow
    for flow in changes.delete_flows:
        del out.flows[flow.key]
    for gid in changes.delete_groups:
        del out.groups[gid]
    return out


def random_change(rng: random.Random, cluster: Cluster, serial: list[int]) -> None:
    kind = rng.choice(["add_pod", "delete_pod", "relabel", "add_service", "delete_service", "policy", "type",
                       "forwarding"])
    if kind == "add_pod" or not cluster.pods:
        node = rng.choice(cluster.nodes)
        used = {p.ip for p in cluster.pods}
        host = next(h for h in range(2, 200) if addr.pod_ip(node.index, h) not in used)
        serial[0] += 1
        cluster.pods.append(Pod(f"pod-{serial[0]}", node.name, labels={"app": rng.choice(APPS)},
                                ports=(ContainerPort(8080),), ip=addr.pod_ip(node.index, host), serial=serial[0]))
    elif kind == "delete_pod":
        cluster.pods.remove(rng.choice(cluster.pods))
    elif kind == "relabel":  # a label every Service reads, or one only two-label selectors read
        pod = rng.choice(cluster.pods)
        if rng.random() < 0.5:
            pod.labels["app"] = rng.choice(APPS)
        elif pod.labels.pop("tier", None) is None:
            pod.labels["tier"] = "front"
    elif kind == "add_service" or not cluster.services:
        port = 30000 + len(cluster.services) + serial[0]
        serial[0] += 1
        selector = {"app": rng.choice(APPS)} if rng.random() < 0.6 else {"app": rng.choice(APPS), "tier": "front"}
        cluster.services.append(Service(f"svc-{serial[0]}", [ServicePort(80, port, 8080)],
                                        selector=selector,
                                        type=rng.choice(["NodePort", "LoadBalancer"]),
                                        external_traffic_policy=rng.choice(["Cluster", "Local"])))
    elif kind == "delete_service":
        cluster.services.remove(rng.choice(cluster.services))
    elif kind == "policy":
        svc = rng.choice(cluster.services)
        svc.external_traffic_policy = "Local" if svc.external_traffic_policy == "Cluster" else "Cluster"
    elif kind == "forwarding":  # DSR on or off (controllers.pipeline_dsr)
        svc = rng.choice(cluster.services)
        mode = svc.annotations.get("service.cilium.io/forwarding-mode", "snat")
        svc.annotations["service.cilium.io/forwarding-mode"] = "dsr" if mode == "snat" else "snat"
    else:
        svc = rng.choice(cluster.services)
        svc.type = "LoadBalancer" if svc.type == "NodePort" else "NodePort"


@pytest.mark.parametrize("seed", range(4))
def test_incremental_programs_equal_a_full_compile_after_every_change(seed):
    rng = random.Random(seed)
    cluster = Cluster([Node("node-a", 1), Node("node-b", 2), Node("node-c", 3)], [], [])
    serial = [0]
    incremental = IncrementalPrograms()
    switches: dict[int, Program] = {}
    for step in range(80):
        random_change(rng, cluster, serial)
        state = build_proxy_state(cluster, step + 1, netns_pids={"node-a": 100 + step // 20})
        lb_services = [f"{s.namespace}/{s.name}" for s in cluster.services if s.type == "LoadBalancer"]
        healthy = {key: rng.sample(["node-a", "node-b", "node-c"], rng.randint(0, 3)) for key in lb_services}
        touched = incremental.update(state, healthy)
        full = compile_state(state, healthy)
        got = incremental.programs
        assert set(got) == set(full)
        for dpid, program in full.items():
            assert got[dpid].flows == program.flows, (step, dpid)
            assert got[dpid].groups == program.groups, (step, dpid)
            old = switches.get(dpid, Program())
            changes = diff_touched(touched[dpid], program) if dpid in touched else Changes()
            assert len(changes) == len(diff(old, program)), (step, dpid)  # no more and no fewer messages
            switches[dpid] = apply(old, changes) if dpid in switches else copy.deepcopy(program)
            assert switches[dpid].flows == program.flows and switches[dpid].groups == program.groups


@pytest.mark.parametrize("seed", range(3))
def test_an_install_sent_in_parts_leaves_the_switches_holding_the_full_compile(seed, monkeypatch):
    """``on_part``: a switch taking in each part as it comes (what the part touched since the last one),
    then the rest at the end, holds exactly the program; parts come only where an update only adds,
    and every bridge's first part comes before any bridge's second."""
    monkeypatch.setattr(incremental_module, "PART_PIECES", 3)
    rng = random.Random(200 + seed)
    cluster = Cluster([Node("node-a", 1), Node("node-b", 2), Node("node-c", 3)], [], [])
    serial = [0]
    incremental = IncrementalPrograms()
    switches: dict[int, Program] = {}
    parted = 0
    for step in range(60):
        if rng.random() < 0.3:  # now and then many Services at once: an install
            for _ in range(rng.randint(4, 12)):
                serial[0] += 1
                cluster.services.append(Service(f"bulk-{serial[0]}", [ServicePort(80, 40000 + serial[0], 8080)],
                                                selector={"app": rng.choice(APPS)}))
        else:
            random_change(rng, cluster, serial)
        state = build_proxy_state(cluster, step + 1)
        before = dict(switches)
        sent = dict.fromkeys(switches, 0)  # messages per bridge in this update
        parts: list[tuple[int, int]] = []  # (dpid, its part number)

        def on_part(dpid, touched, parts=parts, sent=sent):
            assert all(v is None for v in touched.flows.values()) and all(
                v is None for v in touched.groups.values()), "a part of an update that does more than add"
            changes = diff_touched(touched, incremental.programs[dpid])
            switches[dpid] = apply(switches.get(dpid, Program()), changes)
            sent[dpid] = sent.get(dpid, 0) + len(changes)
            touched.sent = (len(touched.flows), len(touched.groups))
            parts.append((dpid, sum(1 for d, _ in parts if d == dpid) + 1))

        touched = incremental.update(state, None, on_part=on_part)
        parted += len(parts)
        numbers = [n for _, n in parts]
        assert numbers == sorted(numbers), parts  # chunk by chunk across the bridges
        for dpid, program in compile_state(state).items():
            changes = diff_touched(touched[dpid], program) if dpid in touched else Changes()
            switches[dpid] = apply(switches.get(dpid, Program()), changes)
            assert switches[dpid].flows == program.flows and switches[dpid].groups == program.groups, (step, dpid)
            # no message sent twice, none left out
            assert sent.get(dpid, 0) + len(changes) == len(diff(before.get(dpid, Program()), program)), (step, dpid)
    assert parted > 10  # (the parts were there to be tested)


def test_a_pod_change_touches_only_its_service_port():
    cluster = Cluster([Node("node-a", 1), Node("node-b", 2)], [], [])
    for i in range(4):
        node = cluster.nodes[i % 2]
        cluster.pods.append(Pod(f"web-{i}", node.name, labels={"app": f"app-{i % 2}"}, ports=(ContainerPort(8080),),
                                ip=addr.pod_ip(node.index, 2 + i), serial=i + 1))
    cluster.services = [Service(f"svc-{i}", [ServicePort(80, 30000 + i, 8080)], selector={"app": f"app-{i % 2}"})
                        for i in range(100)]
    incremental = IncrementalPrograms()
    incremental.update(build_proxy_state(cluster, 1))
    cluster.services[7].selector = {"app": "app-0"}
    state = build_proxy_state(cluster, 2)
    touched = incremental.update(state)
    sp = next(p for p in state.service_ports if p.service == "svc-7")
    for t in touched.values():
        assert set(t.groups) <= {group_id(sp.id, local=False), group_id(sp.id, local=True)}, t.groups  # svc-7's
        assert len(t.flows) <= 4, t.flows  # its nodePort flow, and hairpin flows of endpoints that came or went


@pytest.mark.parametrize("seed", range(3))
def test_the_state_built_from_remembered_service_ports_equals_one_built_afresh(seed):
    """lab.emulation.proxy_state keeps each Service's ports by what they are made of; after any change
    the state must be what computing every Service again gives."""
    import lab.emulation.proxy_state as proxy_state

    rng = random.Random(100 + seed)
    cluster = Cluster([Node("node-a", 1), Node("node-b", 2), Node("node-c", 3)], [], [])
    serial = [0]
    for step in range(80):
        random_change(rng, cluster, serial)
        if cluster.pods and rng.random() < 0.2:
            pod = rng.choice(cluster.pods)
            pod.ports = (ContainerPort(rng.choice([8080, 9090])),)
        remembered = build_proxy_state(cluster, step)
        proxy_state._PORTS.clear()
        assert remembered == build_proxy_state(cluster, step), step


def test_relabelling_a_pod_recomputes_only_the_services_whose_selectors_read_that_label():
    """A readiness flip done by a label (the bench's flip Service) must not recompute the other
    Services picking the same pod: their ports stay the very objects of the last state."""
    node = Node("node-a", 1)
    pods = [Pod(f"web-{i}", node.name, labels={"app": "web"}, ports=(ContainerPort(8080),),
                ip=addr.pod_ip(node.index, 2 + i), serial=i + 1) for i in range(3)]
    cluster = Cluster([node], pods, [
        Service("plain", [ServicePort(80, 30001, 8080)], selector={"app": "web"}),
        Service("front", [ServicePort(80, 30002, 8080)], selector={"app": "web", "tier": "front"})])
    before = {sp.service: sp for sp in build_proxy_state(cluster, 1).service_ports}
    pods[0].labels["tier"] = "front"
    after = {sp.service: sp for sp in build_proxy_state(cluster, 2).service_ports}
    assert after["plain"] is before["plain"]
    assert [e.pod for e in after["front"].endpoints] == ["web-0"] and not before["front"].endpoints
    pods[1].labels["other"] = "x"  # read by no selector: nothing is recomputed
    again = {sp.service: sp for sp in build_proxy_state(cluster, 3).service_ports}
    assert again["plain"] is after["plain"] and again["front"] is after["front"]
