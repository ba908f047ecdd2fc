"""The commands the batched network build runs (pure text; the real build is in tests/integration)."""

import subprocess

import pytest

pytest.importorskip("mininet")

from lab.emulation.fast_build import veth_command  # noqa: E402
from lab.emulation.fast_nodes import ip_batch, write_sysctls  # noqa: E402


def test_veth_command_places_each_end_in_its_namespace_with_its_mac():
    line = veth_command("eth0", "02:00:0a:f4:01:02", 4242, "npl-ab-p1", "0a:00:00:00:00:01", None)
    assert line == ("link add name eth0 address 02:00:0a:f4:01:02 netns 4242 type veth "
                    "peer name npl-ab-p1 address 0a:00:00:00:00:01")


def test_veth_command_between_two_root_ends_has_no_netns():
    assert veth_command("a", None, None, "b", None, None) == "link add name a type veth peer name b"


def test_ip_batch_gives_ip_one_line_per_command():
    """The here-string's text, as bash expands it, is the ip commands one per line."""
    command = ip_batch(["link set eth0 up", "route replace default via 10.0.0.1"])
    assert command.startswith("ip -force -batch - <<< ")
    shown = subprocess.run(["bash", "-c", command.replace("ip -force -batch -", "cat")],
                           capture_output=True, text=True, check=True).stdout
    assert shown == "link set eth0 up\nroute replace default via 10.0.0.1\n"


def test_write_sysctls_writes_proc_sys_paths():
    assert write_sysctls({"net.ipv6.conf.all.disable_ipv6": "1"}) == "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6"


def test_own_processes_records_every_process_in_one_save(tmp_path, monkeypatch):
    import os

    from lab.emulation.resources import RunDir
    run = RunDir(str(tmp_path), tag="ab")
    saves = []
    monkeypatch.setattr(run, "save", lambda: saves.append(1))
    run.own_processes([(os.getpid(), "me"), (os.getppid(), "parent")])
    assert saves == [1]
    assert run.resources.processes[str(os.getpid())][0] == "me"
    assert set(run.resources.starts) == {str(os.getpid()), str(os.getppid())}
