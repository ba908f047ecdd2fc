"""Bridge and interface names carry the run's tag (``lab.kube.addressing``): unique per run, within
IFNAMSIZ, parsed back exactly, and ``lab clean`` removes a dead run's own names and nothing of another's."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess

import pytest

from lab.emulation import resources
from lab.emulation.resources import Resources, start_time
from lab.kube import addressing as addr

TAG = "4kz"
OLD_SCHEME = ["npl-ul", "npl-n1", "npl-n12-up", "npl-ul-n200", "npl-n3-h", "npl-p123", "npl-ul-c", "npl-ul-lb"]
DECOYS = ["nplx-n1", "npl-decoy-1", "npl-kn-cl", "npl-4kz", "npl-4kz-", "npl-4KZ-n1", "npl-a1b-n1", "xnpl-4kz-n1",
          "eth0", "ovs-system"]


def every_name(tag: str, nodes: int = 200, serial: int = addr.MAX_POD_SERIAL) -> list[str]:
    names = [addr.underlay_bridge(tag), addr.client_intf(tag), addr.lb_intf(tag), addr.pod_intf(serial, tag)]
    for i in (1, nodes):
        names += [addr.node_bridge(i, tag), *addr.node_uplink_intf(i, tag), addr.node_host_intf(i, tag)]
    return names


def test_names_follow_the_documented_rule():
    assert every_name(TAG, nodes=3, serial=12) == [
        "npl-4kz-ul", "npl-4kz-ul-c", "npl-4kz-ul-lb", "npl-4kz-p12",
        "npl-4kz-n1", "npl-4kz-n1-up", "npl-4kz-ul-n1", "npl-4kz-n1-h",
        "npl-4kz-n3", "npl-4kz-n3-up", "npl-4kz-ul-n3", "npl-4kz-n3-h"]


def test_the_longest_names_fit_ifnamsiz():
    longest = max(every_name("9zz", nodes=addr.MAX_NODES), key=len)
    assert len(longest) == addr.IFNAMSIZ - 1, longest  # npl-9zz-n200-up: exactly the limit
    with pytest.raises(ValueError, match="at most"):
        addr.pod_intf(addr.MAX_POD_SERIAL + 1, TAG)


def test_every_name_parses_back_to_its_tag_and_nothing_else_does():
    for tag in ("000", "9zz", TAG):
        assert {addr.tag_of(n) for n in every_name(tag)} == {tag}
    for name in OLD_SCHEME + DECOYS:
        assert addr.tag_of(name) is None, name


def test_the_run_tag_is_the_default_and_names_need_one(monkeypatch):
    monkeypatch.setattr(addr, "run_tag", None)
    with pytest.raises(RuntimeError, match="no run tag"):
        addr.node_bridge(1)
    addr.set_run_tag("7ab")
    assert addr.node_bridge(1) == "npl-7ab-n1" and addr.node_bridge(1, TAG) == "npl-4kz-n1"
    for bad in ("abc", "7a", "7abc", "7AB", "7a-", ""):
        with pytest.raises(ValueError):
            addr.set_run_tag(bad)


def test_a_chosen_tag_is_never_one_in_use():
    everything = set(addr._all_tags())
    assert len(everything) == 10 * 36 * 36 and all(addr.is_tag(t) for t in everything)
    rng = random.Random(1)
    taken = set(rng.sample(sorted(everything), 12_000))
    chosen = {addr.choose_tag(taken, rng) for _ in range(200)}
    assert chosen and not chosen & taken
    assert addr.choose_tag(everything - {"5q0"}, rng) == "5q0"
    with pytest.raises(ValueError, match="every run tag is in use"):
        addr.choose_tag(everything, rng)


def _no_machine(monkeypatch, bridges=(), interfaces=()):
    monkeypatch.setattr(resources, "list_bridges", lambda: list(bridges))
    monkeypatch.setattr(resources, "list_interfaces", lambda: list(interfaces))


def test_a_new_run_avoids_tags_of_live_names_and_of_every_record(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "RUN_ROOT", str(tmp_path))
    everything = set(addr._all_tags())
    in_bridges, in_interfaces, in_record = sorted(everything)[:3]
    free = "8x8"
    busy = everything - {in_bridges, in_interfaces, in_record, free}
    _no_machine(monkeypatch, bridges=[f"npl-{t}-ul" for t in busy] + [f"npl-{in_bridges}-n1"],
                interfaces=[f"npl-{in_interfaces}-p1", "eth0"])
    old = tmp_path / "run-1-1"
    old.mkdir()
    (old / "resources.json").write_text(json.dumps({"owner_pid": 1, "bridges": [], "interfaces": [],
                                                    "processes": {}}))
    (old / "identity.json").write_text(json.dumps({"tag": in_record}))
    assert resources.tags_in_use() == everything - {free}
    run = resources.RunDir.create()
    assert run.tag == free and addr.run_tag == free and addr.underlay_bridge() == f"npl-{free}-ul"
    assert resources.read_record(run.file("resources.json")).tag == free  # kept in identity.json
    with open(run.file("resources.json")) as f:
        assert sorted(json.load(f)) == sorted(Resources.FIRST_VERSION)  # older labs still read it


def _is_bridge(name: str) -> bool:
    return re.fullmatch(r"npl-[0-9a-z]{3}-(ul|n[0-9]+)", name) is not None


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_clean_removes_a_dead_runs_own_names_and_never_another_runs(tmp_path, monkeypatch):
    """Run A died; run B (this process) lives. A's record also lists one of B's names (damaged, or
    written by hand): clean removes A's names exactly, touches none of B's, and says so."""
    monkeypatch.setattr(resources, "RUN_ROOT", str(tmp_path))
    monkeypatch.setattr(resources, "SOCKET_ROOT", str(tmp_path / "sockets"))  # not the machine's
    a_names = every_name("1aa", nodes=2, serial=1)
    b_names = every_name("2bb", nodes=2, serial=1)
    machine = set(a_names) | set(b_names) | set(OLD_SCHEME)
    _no_machine(monkeypatch, bridges=[n for n in machine if _is_bridge(n)])
    monkeypatch.setattr(resources, "interface_exists", lambda name: name in machine)
    deleted = []

    def fake_run(argv, **kwargs):
        if argv[:3] == ["ip", "link", "del"] or "del-br" in argv:
            deleted.append(argv[-1])
            machine.discard(argv[-1])
        return subprocess.CompletedProcess(argv, 0, "", "")
    monkeypatch.setattr(resources.subprocess, "run", fake_run)

    def record(name, owner, start, tag, names):
        path = tmp_path / name
        path.mkdir()
        run = resources.RunDir(str(path), tag)
        run.resources.owner_pid, run.resources.owner_start = owner, start
        run.own_bridges([n for n in names if _is_bridge(n)])
        run.own_interfaces([n for n in names if not _is_bridge(n)])
    dead = _dead_pid()
    record(f"run-{dead}-1", dead, 1, "1aa", a_names + [b_names[3]])
    record(f"run-{os.getpid()}-2", os.getpid(), start_time(os.getpid()), "2bb", b_names)

    report = resources.clean_stale_runs()
    assert sorted(deleted) == sorted(a_names)
    assert machine == set(b_names) | set(OLD_SCHEME)
    assert any(f"left alone {b_names[3]}: not named with the run's tag '1aa'" in line for line in report), report
    assert any("still running" in line for line in report)
    assert not (tmp_path / f"run-{dead}-1").exists() and (tmp_path / f"run-{os.getpid()}-2").exists()


def test_an_old_record_without_a_tag_keeps_every_recorded_name():
    old = Resources.from_json({"owner_pid": 1, "bridges": ["npl-n1"], "interfaces": ["npl-p1"], "processes": {}})
    assert old.tag == "" and old.names() == ["npl-n1", "npl-p1"] and old.foreign_names() == []


def test_the_removal_bench_names_what_it_makes_with_the_run_tag():
    """Teardown and ``lab clean`` remove only names carrying their run's tag: an untagged name is left."""
    from bench.ovs_removal import _names

    bridges, veths = _names(101, 1302)
    names = bridges + [n for pair in veths for n in pair]
    assert {addr.tag_of(n) for n in names} == {addr.run_tag}
    assert max(len(n) for n in names) < addr.IFNAMSIZ
