"""Which change may travel in lanes, and how it is split (controllers.lanes.plan), without a switch."""

from __future__ import annotations

from dataclasses import replace

from controllers.diff import Changes, diff
from controllers.lanes import mgmt_path, plan
from controllers.pipeline import Flow, Group, Program, compile_state
from lab.emulation.proxy_state import build_proxy_state
from lab.kube.model import ServicePort
from tests.unit.test_pipeline import make_cluster


def program_changes(removing: bool = False) -> Changes:
    cluster = make_cluster()
    cluster.services += [replace(cluster.services[0], name=f"web-{i}", ports=[ServicePort(80, 30100 + i, 8080)])
                         for i in range(20)]
    program = next(iter(compile_state(build_proxy_state(cluster, 1)).values()))
    return diff(program, Program()) if removing else diff(Program(), program)


def group_of(flow: Flow) -> int | None:
    return next((a[1] for a in flow.actions if a[0] == "group"), None)


def test_an_install_is_split_with_each_group_beside_the_flows_that_use_it():
    changes = program_changes()
    assert changes.add_groups and any(group_of(f) is not None for f in changes.add_flows)
    parts = plan(changes, lanes=4)
    assert parts is not None and 1 < len(parts) <= 4
    assert sum(len(p) for p in parts) == len(changes)
    for part in parts:
        held = {g.group_id for g in part.add_groups}
        assert all(group_of(f) in held for f in part.add_flows if group_of(f) is not None)
    assert sorted(map(str, (f for p in parts for f in p.add_flows))) == sorted(map(str, changes.add_flows))


def test_a_removal_keeps_a_flow_and_its_group_in_one_lane():
    changes = program_changes(removing=True)
    parts = plan(changes, lanes=4)
    assert parts is not None
    for part in parts:
        assert all(group_of(f) in part.delete_groups for f in part.delete_flows if group_of(f) is not None)
    assert sorted(g for p in parts for g in p.delete_groups) == sorted(changes.delete_groups)


def test_a_change_that_modifies_or_mixes_stays_on_one_connection():
    flow = Flow(20, 100, (("eth_type", 0x0800),), (("group", 2),), 1)
    assert plan(Changes(modify_flows=[flow])) is None
    assert plan(Changes(modify_groups=[Group(2, ())])) is None
    assert plan(Changes(add_flows=[flow], delete_groups=[4])) is None
    assert plan(Changes(add_groups=[Group(2, ())], add_flows=[flow])) is not None


def test_only_a_bridge_name_becomes_a_socket_path(tmp_path):
    (tmp_path / "npl-abc-n1.mgmt").write_text("")
    assert mgmt_path("npl-abc-n1", str(tmp_path)) == str(tmp_path / "npl-abc-n1.mgmt")
    assert mgmt_path("npl-abc-n2", str(tmp_path)) is None  # no such socket
    for bad in ("../etc/x", "a/b", "", "-x", "x" * 16):
        assert mgmt_path(bad, str(tmp_path)) is None
