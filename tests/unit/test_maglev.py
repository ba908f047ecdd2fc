"""Maglev (Cilium's ``loadBalancer.algorithm=maglev``): the lookup table's guarantees, its flows, where
the choice comes from (cluster-wide setting, the Service's annotation), and its OpenFlow encoding.

The table's guarantees are the paper's (Eisenbud et al., NSDI 2016, section 3.4): each backend takes
floor(M/N) or ceil(M/N) slots, so with M > 100 * N the backends' shares differ by at most 1 %; and
removing a backend moves its own slots and few others. Cilium's documentation reads the paper's 1 % as a
bound on reassignment; at the lab's M = 1021 that holds for up to 3 endpoints, and the extra moves stay
within 5 % of the table up to 10 endpoints (measured below; a larger M moves fewer: the paper's own
default is 65537).
"""

from __future__ import annotations

import random
import shutil
import subprocess
from collections import Counter

import pytest

from controllers import maglev, ofwire
from controllers.diff import diff
from controllers.flows import T_MAGLEV, T_SERVICE, T_STICKY, T_UDP_PICK, Flow, Multipath
from controllers.incremental import IncrementalPrograms
from controllers.pipeline import compile_state, group_id, service_port_piece
from lab import cli
from lab.emulation.proxy_state import build_proxy_state
from lab.errors import LabError, ManifestError
from lab.kube import addressing as addr
from lab.kube.lb_algorithm import ANNOTATION
from lab.kube.manifests import build_cluster
from lab.kube.manifests.reader import parse
from lab.kube.model import Cluster, ContainerPort, Node, Pod, Service, ServicePort

M = maglev.TABLE_SIZE
WEB = {"app": "web"}
MAGLEV = {ANNOTATION: "maglev"}


def backends(n: int) -> list[str]:
    """n pods' identities, spread over three nodes as the lab's addresses are."""
    return [maglev.identity(addr.pod_ip(i % 3 + 1, 2 + i // 3), 8080) for i in range(n)]


# --- the table ---------------------------------------------------------------------------------------

def test_the_lab_table_size_is_a_prime_cilium_supports_and_over_100_times_the_lab_endpoint_counts():
    assert M in maglev.SUPPORTED_SIZES and M > 100 * 10
    assert all(M % d for d in range(2, int(M ** 0.5) + 1))


@pytest.mark.parametrize("n", range(1, 11))
def test_every_backend_gets_floor_or_ceil_of_m_over_n_slots(n):
    counts = Counter(maglev.lookup_table(backends(n)))
    assert len(counts) == n and sum(counts.values()) == M
    assert set(counts.values()) <= {M // n, -(-M // n)}
    assert (max(counts.values()) - min(counts.values())) / (M / n) <= 0.01  # the paper's 1 % in hash space


def test_the_table_is_the_same_for_the_same_endpoints_in_any_order():
    names = backends(7)
    table = maglev.lookup_table(names)
    rng = random.Random(3)
    for _ in range(5):
        shuffled = names[:]
        rng.shuffle(shuffled)
        assert maglev.lookup_table(shuffled) == table
    assert maglev.lookup_table(names + names[:2]) == table  # duplicates change nothing
    assert maglev.lookup_table(names[:-1]) != table


@pytest.mark.parametrize("n", range(2, 11))
def test_removing_one_of_n_backends_moves_its_slots_and_few_others(n):
    names = backends(n)
    full = maglev.lookup_table(names)
    for gone in names:
        after = maglev.lookup_table([b for b in names if b != gone])
        assert gone not in after
        own = full.count(gone)
        others = sum(1 for a, b in zip(full, after, strict=True) if a != gone and a != b)
        assert maglev.moved(full, after) == own + others
        assert own / M <= 1 / n + 1 / M  # about 1/N: the leaving backend's share
        # Cilium's documented bound (1/N + 1 %) for up to 3 endpoints (the seed has 2); measured at
        # M = 1021 with these addresses: 1.1 % at 4, 1.9 % at 6, 4.0 % at 10 (16381 keeps 10 within 0.7 %)
        assert others / M <= (0.01 if n <= 3 else 0.05), (gone, others)


def test_maglev_moves_far_fewer_connections_than_hashing_modulo_n():
    names = backends(5)
    full, after = maglev.lookup_table(names), maglev.lookup_table(names[:-1])
    modulo = sum(1 for h in range(M) if names[h % 5] != names[:-1][h % 4])
    assert maglev.moved(full, after) < modulo / 3


def test_populate_fills_the_paper_table_1():
    """Eisenbud et al., Table 1: M = 7, (offset, skip) of B0, B1, B2 = (3, 4), (0, 2), (3, 1); then B1 goes."""
    assert maglev.populate([(3, 4), (0, 2), (3, 1)], 7) == [1, 0, 1, 0, 2, 2, 0]  # B1 B0 B1 B0 B2 B2 B0
    assert maglev.populate([(3, 4), (3, 1)], 7) == [0, 0, 0, 0, 1, 1, 1]  # B0 B0 B0 B0 B2 B2 B2


def test_a_table_size_must_be_prime():
    with pytest.raises(ValueError, match="prime"):
        maglev.lookup_table(["a"], 1000)
    assert maglev.lookup_table([]) == ()


# --- flows -------------------------------------------------------------------------------------------

def cluster(n_pods: int = 3, algorithm: str = "random", **service) -> Cluster:
    nodes = [Node("node-a", 1), Node("node-b", 2), Node("node-c", 3)]
    pods = [Pod(f"web-{i}", f"node-{'ab'[i % 2]}", labels=WEB, ports=(ContainerPort(8080),),
                ip=addr.pod_ip(i % 2 + 1, 2 + i // 2), serial=i) for i in range(n_pods)]
    spec = {"type": "NodePort", **service}
    ports = spec.pop("ports", [ServicePort(80, 30080, 8080)])
    return Cluster(nodes, pods, [Service("web", ports, selector=WEB, **spec)], lb_algorithm=algorithm)


def programs(c: Cluster):
    state = build_proxy_state(c, 1)
    return state, {n.name: compile_state(state)[n.dpid] for n in state.nodes}


def maglev_flows(program, gid: int) -> list[Flow]:
    return sorted((f for f in program.flows.values() if f.table == T_MAGLEV and dict(f.match)["reg4"] == gid),
                  key=lambda f: dict(f.match)["reg1"])


def endpoint_of(flow: Flow) -> str:
    [(_, ct)] = flow.actions
    return ct.nat.removeprefix("dst=")


def test_maglev_flows_present_with_maglev_and_absent_with_random():
    state, random_progs = programs(cluster())
    gid = group_id(state.service_ports[0].id, local=False)
    for prog in random_progs.values():
        assert gid in prog.groups and not maglev_flows(prog, gid)
        assert not any(a[0] == "multipath" for f in prog.flows.values() for a in f.actions)
    state, maglev_progs = programs(cluster(algorithm="maglev"))
    assert state.service_ports[0].algorithm == "maglev"
    for prog in maglev_progs.values():
        assert gid not in prog.groups
        assert len(maglev_flows(prog, gid)) == M
        entries = [f for f in prog.flows.values() if f.table == T_SERVICE and ("goto", T_MAGLEV) in f.actions]
        assert entries and all(("multipath", Multipath(M, "reg1")) in f.actions for f in entries)


def test_every_node_holds_the_same_table():
    """Only the conntrack zone (per emulated node) differs; each slot names the same endpoint everywhere."""
    state, progs = programs(cluster(n_pods=5, algorithm="maglev"))
    gid = group_id(state.service_ports[0].id, local=False)
    tables = {name: [endpoint_of(f) for f in maglev_flows(prog, gid)] for name, prog in progs.items()}
    assert tables["node-a"] == tables["node-b"] == tables["node-c"]
    eps = state.service_ports[0].endpoints
    assert tables["node-a"] == list(maglev.lookup_table(f"{e.ip}:{e.port}" for e in eps))


def test_local_chains_have_their_own_table_of_the_local_endpoints():
    state, progs = programs(cluster(n_pods=3, algorithm="maglev", external_traffic_policy="Local"))
    local = group_id(state.service_ports[0].id, local=True)
    table = [endpoint_of(f) for f in maglev_flows(progs["node-b"], local)]
    assert set(table) == {f"{addr.pod_ip(2, 2)}:8080"} and len(table) == M  # node-b has one pod
    assert not maglev_flows(progs["node-c"], local)  # no local endpoint: dropped, as before


def test_affinity_comes_first_and_falls_back_to_the_maglev_table():
    state, progs = programs(cluster(algorithm="maglev", session_affinity_timeout=30))
    gid = group_id(state.service_ports[0].id, local=False)
    [fallback] = [f for f in progs["node-a"].flows.values() if f.table == T_STICKY and f.priority == 10]
    assert fallback.actions[-1] == ("goto", T_MAGLEV) and fallback.actions[-2][0] == "multipath"
    assert len(maglev_flows(progs["node-a"], gid)) == M


def test_udp_maglev_hashes_ports_too_and_needs_no_source_port_slots():
    state, progs = programs(cluster(algorithm="maglev", ports=[ServicePort(53, 30053, 8080, protocol="UDP")]))
    prog = progs["node-a"]
    assert not [f for f in prog.flows.values() if f.table == T_UDP_PICK]
    assert len(maglev_flows(prog, group_id(state.service_ports[0].id, local=False))) == M
    assert Multipath(M, "reg1").fields == "symmetric_l3l4+udp"


def golden(zone: int, gid: int, table: list[str]) -> list[str]:
    pick = f"set_field:{gid:#x}->reg4,multipath(symmetric_l3l4+udp,0,modulo_n,7,0,reg1[0..15]),goto_table:24"
    new = "cookie=0x3,table=20,priority=100,dl_type=0x800,ct_state=+new-rpl+trk"
    lines = [f"{new},in_port=2,nw_dst=127.0.0.1,nw_proto=6,tp_dst=30080 actions=set_field:0x1->reg0,{pick}",
             f"{new},reg8=0x10000/0x10000,nw_proto=6,tp_dst=30080 actions=set_field:0x1->reg0,{pick}"]
    lines += [f"cookie=0x3,table=24,priority=100,dl_type=0x800,reg4={gid},reg1={slot} actions=ct(commit,zone={zone},"
              f"nat(dst={ep}:8080),exec(move:reg0[0]->ct_mark[0]),table=30)" for slot, ep in enumerate(table)]
    return lines


def test_golden_flows_of_a_small_maglev_service_on_each_node(monkeypatch):
    """The whole program of one NodePort Service with three endpoints, at the paper's example size M = 7
    (Table 1), so that it fits on a page: the nodePort entries hash to a slot, each slot DNATs."""
    monkeypatch.setattr(maglev, "TABLE_SIZE", 7)
    c = cluster(n_pods=3, algorithm="maglev")
    c.services[0].cluster_ip = "None"  # keep the clusterIP chains out of the listing: only the nodePort's
    c.services[0].type = "NodePort"
    state = build_proxy_state(c, 1)
    sp = state.service_ports[0]
    gid = group_id(sp.id, local=False)
    a1, b1, a2 = addr.pod_ip(1, 2), addr.pod_ip(2, 2), addr.pod_ip(1, 3)
    table = [a1, a1, b1, b1, a2, a2, a1]  # what Populate gives these three at M = 7
    for node in state.nodes:
        dump = [line for line in service_port_piece(node, sp).dump() if "table=30" not in line.split(" ")[0]]
        assert dump == golden(1000 + node.index, gid, table), "\n".join(dump)


def test_removing_an_endpoint_rewrites_only_the_slots_that_change():
    """What kube-proxy sends when a pod goes: the flows of the slots that named it, and few more; the
    other slots' flows (and their counters) stay as they are."""
    c = cluster(n_pods=4, algorithm="maglev")
    before = compile_state(build_proxy_state(c, 1))
    c.pods.pop()
    after = compile_state(build_proxy_state(c, 2))
    for dpid in before:
        changes = diff(before[dpid], after[dpid])
        if not any(f.table == T_MAGLEV for f in before[dpid].flows.values()):
            continue
        rewritten = [f for f in changes.modify_flows if f.table == T_MAGLEV]
        assert M / 4 - 1 <= len(rewritten) <= M / 4 + 0.01 * M, len(rewritten)
        assert not [f for f in changes.add_flows + changes.delete_flows if f.table == T_MAGLEV]


def test_incremental_programs_equal_a_full_compile_with_maglev():
    c = cluster(n_pods=4, algorithm="maglev", type="LoadBalancer")
    incremental = IncrementalPrograms()
    for step, change in enumerate([None, "drop", "random", "maglev"]):
        if change == "drop":
            c.pods.pop()
        elif change:
            c.services[0].annotations = {ANNOTATION: change}
        state = build_proxy_state(c, step + 1)
        incremental.update(state, {})
        full = compile_state(state, {})
        for dpid, program in full.items():
            assert incremental.programs[dpid].flows == program.flows and incremental.programs[dpid].groups == \
                program.groups


# --- where the choice comes from ---------------------------------------------------------------------

SERVICE_YAML = """
apiVersion: v1
kind: Pod
metadata: {{name: web-1, labels: {{app: web}}}}
spec: {{containers: [{{name: app, image: nginx, ports: [{{containerPort: 8080}}]}}]}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  annotations: {annotations}
spec: {{type: NodePort, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}
"""


def read(annotations: str) -> Cluster:
    return build_cluster(parse(SERVICE_YAML.format(annotations=annotations), "svc.yaml"))


def algorithm_of(c: Cluster) -> str:
    return build_proxy_state(c, 1).service_ports[0].algorithm


def test_the_annotation_is_read_and_overrides_the_cluster_setting():
    c = read('{"service.cilium.io/lb-algorithm": maglev}')
    assert c.services[0].annotations == MAGLEV and algorithm_of(c) == "maglev"
    c = read('{"service.cilium.io/lb-algorithm": random}')
    c.lb_algorithm = "maglev"
    assert algorithm_of(c) == "random"
    c = read("{}")
    assert algorithm_of(c) == "random"
    c.lb_algorithm = "maglev"
    assert algorithm_of(c) == "maglev"


def test_a_bad_annotation_value_is_one_line_naming_the_service_and_the_annotation():
    with pytest.raises(ManifestError) as err:
        read('{"service.cilium.io/lb-algorithm": "round-robin"}')
    assert str(err.value) == ('Service "web" (svc.yaml): metadata.annotations[service.cilium.io/lb-algorithm] '
                              '"round-robin" is not a load-balancing algorithm: use random or maglev')
    c = cluster()
    c.services[0].annotations = {ANNOTATION: "Maglev"}  # built in Python, not read: caught where it is used
    with pytest.raises(LabError, match='Service "default/web": annotation service.cilium.io/lb-algorithm "Maglev" '
                                       "is not a load-balancing algorithm: use random or maglev"):
        build_proxy_state(c, 1)
    c = cluster(algorithm="consistent")
    with pytest.raises(LabError, match="Cluster.lb_algorithm"):
        build_proxy_state(c, 1)


def test_other_cilium_annotations_warn_by_name():
    c = read('{"service.cilium.io/lb-algorithm": maglev, "service.cilium.io/global": "true", '
             '"example.com/owner": team-a}')
    found = [w for w in c.warnings if "service.cilium.io" in w]
    assert len(found) == 1 and "metadata.annotations[service.cilium.io/global]" in found[0]
    assert not [w for w in c.warnings if "example.com" in w]


def test_the_state_cache_sees_an_algorithm_change():
    c = cluster(type="LoadBalancer")
    assert algorithm_of(c) == "random"
    c.lb_algorithm = "maglev"
    assert algorithm_of(c) == "maglev"
    c.services[0].annotations = {ANNOTATION: "random"}
    assert algorithm_of(c) == "random"


def test_the_command_line_sets_the_cluster_algorithm(tmp_path, monkeypatch, capsys):
    path = tmp_path / "svc.yaml"
    path.write_text(SERVICE_YAML.format(annotations="{}"))
    args = cli.parser(["apply", "-f", str(path), "--lb-algorithm", "maglev"]).parse_args(
        ["apply", "-f", str(path), "--lb-algorithm", "maglev"])
    assert cli._load(args).lb_algorithm == "maglev"
    args = cli.parser(["apply", "-f", str(path)]).parse_args(["apply", "-f", str(path)])
    assert cli._load(args).lb_algorithm == "random"
    path.write_text(SERVICE_YAML.format(annotations='{"service.cilium.io/lb-algorithm": "hash"}'))
    assert cli.main(["apply", "-f", str(path)]) == 2
    assert "metadata.annotations[service.cilium.io/lb-algorithm]" in capsys.readouterr().err


# --- the wire ----------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("ovs-ofctl") is None, reason="ovs-ofctl is not installed")
def test_open_vswitch_reads_the_multipath_action_as_written(tmp_path):
    """os-ken names only the first two hash-field sets: Open vSwitch's own decoder checks the third."""
    flow = Flow(T_SERVICE, 100, (("eth_type", 0x0800),),
                (("set_field", "reg4", 7), ("multipath", Multipath(M, "reg1")), ("goto", T_MAGLEV)), 3)
    path = tmp_path / "flow_mod.bin"
    path.write_bytes(ofwire.flow_mod(flow, 0, 1))
    out = subprocess.run(["ovs-ofctl", "ofp-parse", str(path)], capture_output=True, text=True, check=True).stdout
    assert f"multipath(symmetric_l3l4+udp,0,modulo_n,{M},0,NXM_NX_REG1[0..15]),goto_table:24" in out
    assert str(flow).endswith(f"multipath(symmetric_l3l4+udp,0,modulo_n,{M},0,reg1[0..15]),goto_table:24")
