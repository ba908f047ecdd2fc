"""Faults while traffic flows, one test each with its bound, on one network (``examples/faults``):
three nodes with a web pod each behind a LoadBalancer Service (Cluster), a Local NodePort Service, and
a pod ``tester`` on node-c. Also: the controller's channel refuses an impostor, and another local user
can neither reach it nor take the machine lock.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from lab.cloud.network import LabNetwork
from lab.emulation.pod_sockets import pending_handshakes, read_table
from lab.emulation.resources import LOCK_PATH, SOCKET_ROOT
from lab.kube import addressing as addr
from lab.kube.manifests import load_manifests
from lab.polling import wait_for
from lab.scenarios.faults import BULK_BYTES, EXAMPLES, drain, stream_result

NOTICE_BOUND_S = 1.0  # a dead daemon is noticed (and its restart begun) within this
RATE = 20.0


@pytest.fixture(scope="module")
def lab():
    with LabNetwork(load_manifests([str(EXAMPLES)]), lb_profile="fast") as network:
        yield network


def stream(lab, seconds: float, host: str = addr.CLIENT_NAME, target: str | None = None):
    """Requests at RATE for ``seconds`` in a thread; returns (thread, holder)."""
    target = target or f"{lab.load_balancer_ip('web')}:80"
    holder: dict = {}
    thread = threading.Thread(target=lambda: holder.update(lab.probe([target], int(seconds * RATE), timeout=1.0,
                                                                    rate=RATE, host=host)))
    thread.start()
    return thread, holder


def download(lab, node_port: int):
    ip = addr.node_ip(lab.cluster.node("node-a").index)
    return lab.host("client").popen(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "--limit-rate", "1M",
                                     "-m", "30", f"http://{ip}:{node_port}/bulk?bytes={BULK_BYTES}"],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)


def downloaded(proc) -> int:
    out, _ = proc.communicate(timeout=60)
    return int(out or 0) if proc.returncode == 0 else -1


def killed_and_restarted(lab, proc, name: str) -> dict:
    before = len(lab.restarts)
    killed_at = time.time()
    os.kill(proc.pid, signal.SIGKILL)
    event = wait_for(lambda: next((r for r in lab.restarts[before:] if r["restartedInS"] is not None), None),
                     timeout=15, what=f"{name} to be restarted", last=lambda: lab.restarts[before:])
    assert event["process"] == name and event["how"] == "killed by SIGKILL"
    assert event["noticedAt"] - killed_at <= NOTICE_BOUND_S, event
    return event


def flows(bridge: str) -> list[str]:
    """Every flow of a bridge as ovs-ofctl prints it, without the fields that change as traffic flows."""
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "--no-stats", "dump-flows", bridge],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.strip() for line in out.splitlines() if "table=" in line)


def flow_age_s(bridge: str, needle: str) -> float:
    out = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-flows", bridge],
                         capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if needle in line)
    return float(re.search(r"duration=([0-9.]+)s", line).group(1))


def test_controller_killed_traffic_keeps_flowing_and_it_resyncs(lab):
    bridge = addr.node_bridge(lab.cluster.node("node-a").index)
    held_before = flows(bridge)
    thread, probe = stream(lab, 3.0)
    slow = download(lab, 30100)
    time.sleep(0.5)
    killed_at = time.monotonic()
    killed_and_restarted(lab, lab.controller.proc, "kube-proxy controller")
    lab.controller.wait_applied(lab.dpids, timeout=10)  # every switch back, holding the current state
    thread.join()
    assert downloaded(slow) == BULK_BYTES
    assert stream_result(probe, time.time())["failed"] == 0
    # The restarted controller read what the switch held and changed nothing: same flows, none reinstalled.
    assert flows(bridge) == held_before
    assert flow_age_s(bridge, "priority=200,arp") >= time.monotonic() - killed_at
    with open(lab.controller.log_path) as f:
        log = f.read()
    assert "(0 not in the program)" in log and "emptying it" not in log
    lab.publish()  # and it follows changes again


def test_pod_servers_killed_are_noticed_restarted_and_serve_again(lab):
    event = killed_and_restarted(lab, lab.workload, "pod servers")
    assert event["restartedInS"] < 5
    thread, probe = stream(lab, 1.0)
    thread.join()
    assert stream_result(probe, 0)["failed"] == 0


def test_one_pods_container_dies_alone_and_kubelet_restarts_it(lab):
    victim = next(p.name for p in lab.cluster.pods_on("node-c") if p.labels.get("app") == "web")
    died = time.time()
    lab.kill_container(victim)
    thread, probe = stream(lab, 2.0)  # after the death: the others serve everything
    thread.join()
    served = [r["response"]["pod"] for r in probe["records"] if r["ok"]]
    assert victim not in served and stream_result(probe, 0)["failed"] == 0
    restart = wait_for(lambda: next((r for r in lab.restarts if r.get("pod") == victim), None), timeout=20,
                       what=f"kubelet to restart {victim}")
    assert 10.0 <= restart["restartedInS"] <= 12.0 and time.time() - died >= 10.0  # CrashLoopBackOff: 10 s
    thread, probe = stream(lab, 2.0)
    thread.join()
    assert victim in {r["response"]["pod"] for r in probe["records"] if r["ok"]}


def test_health_checker_killed_verdicts_resume(lab):
    killed_and_restarted(lab, lab.checker, "load balancer health checker")
    verdicts = wait_for(lambda: lab.lb_health()["services"].get("default/web"), timeout=5,
                        what="the restarted checker's verdicts")
    assert sorted(verdicts["healthy"]) == ["node-a", "node-b", "node-c"]


def test_uplink_down_fails_only_while_down_and_converges_after(lab):
    thread, probe = stream(lab, 6.0)
    time.sleep(1.0)
    lab.set_uplink("node-b", False)
    time.sleep(2.0)
    up_at = time.time()
    lab.set_uplink("node-b", True)
    thread.join()
    result = stream_result(probe, up_at)
    assert result["failed"] > 0, "a node cut off from the underlay must cost requests (the fault must be real)"
    assert result["convergedAfterS"] is not None and result["convergedAfterS"] <= 3.0, result


def test_drained_node_loses_no_request(lab):
    thread, probe = stream(lab, 4.0)
    inside, inside_probe = stream(lab, 4.0, host="tester", target=f"{lab.cluster_ip('web')}:80")
    time.sleep(1.0)
    moved = drain(lab, "node-b")
    thread.join()
    inside.join()
    assert moved and not [p for p in lab.cluster.pods_on("node-b") if p.labels.get("app") == "web"]
    assert stream_result(probe, 0)["failed"] == 0
    assert stream_result(inside_probe, 0)["failed"] == 0
    # The in-cluster stream went to the clusterIP, and kube-proxy on node-c spread it over the Service's pods.
    assert {r["target"] for r in inside_probe["records"]} == {f"{lab.cluster_ip('web')}:80"}
    assert len({r["response"]["pod"] for r in inside_probe["records"]}) >= 2


def test_connection_mid_handshake_when_its_pod_is_moved_is_served(lab):
    """A connection the data plane sent to a pod just before its endpoints went may still be in its
    handshake when the pod is moved; closing the listener then would reset it. The pod's kernel is made
    to hold one half-open (the client's ACK and request dropped until the endpoints are gone: TCP
    retransmits them), as a busy node does for a few milliseconds: it must be served all the same."""
    victim = next(p for p in lab.cluster.pods_on("node-a") if p.labels.get("app") == "web")
    drop = ["iptables", "-I", "INPUT", "-p", "tcp", "-s", addr.CLIENT_IP, "--dport", "8080", "--tcp-flags",
            "SYN,ACK", "ACK", "-j", "DROP"]
    assert lab.run_in(victim.name, drop, timeout=10).returncode == 0
    pid = lab.host(victim.name).pid
    request = lab.host("client").popen(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "10",
                                        f"http://{victim.ip}:8080/"], stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL)
    wait_for(lambda: pending_handshakes(read_table(pid), {8080}), timeout=5, what="the half-open connection")
    mover = threading.Thread(target=lab.move_pod, args=(victim.name, "node-b"))
    mover.start()
    wait_for(lambda: victim.name in lab.terminating, timeout=10, interval=0.001, what="its endpoints to go")
    lab.run_in(victim.name, ["iptables", "-D", *drop[2:]], timeout=10)
    mover.join()
    out, _ = request.communicate(timeout=30)
    assert (request.returncode, out) == (0, b"200")


def test_pod_deleted_mid_download_finishes_the_download(lab):
    victim = lab.cluster.pods_on("node-a")[0].name
    slow = lab.host("client").popen(  # from the victim itself: its route must outlive its endpoints
        ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "--limit-rate", "1M", "-m", "30",
         f"http://{lab.cluster.pod(victim).ip}:8080/bulk?bytes={BULK_BYTES}"], stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    lab.delete_pod(victim)
    assert downloaded(slow) == BULK_BYTES
    thread, probe = stream(lab, 1.0)
    thread.join()
    served = {r["response"]["pod"] for r in probe["records"] if r["ok"]}
    assert victim not in served and stream_result(probe, 0)["failed"] == 0


# --- the controller's channel and the lock -----------------------------------------------------------------

OFPT_HELLO, OFPT_FEATURES_REQUEST, OFPT_FEATURES_REPLY = 0, 5, 6


def _recv_message(sock) -> tuple[int, int]:
    head = sock.recv(8, socket.MSG_WAITALL)
    version, kind, length, xid = struct.unpack("!BBHI", head)
    if length > 8:
        sock.recv(length - 8, socket.MSG_WAITALL)
    return kind, xid


def test_a_second_connection_claiming_a_switch_is_refused(lab):
    """An impostor speaking OpenFlow 1.3 as node-a's switch is refused; the real switch stays in charge."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(lab.controller.socket_path)
        sock.sendall(struct.pack("!BBHI", 4, OFPT_HELLO, 8, 1))
        kinds = []
        while OFPT_FEATURES_REQUEST not in kinds:
            kind, xid = _recv_message(sock)
            kinds.append(kind)
        sock.sendall(struct.pack("!BBHIQIBB2xII", 4, OFPT_FEATURES_REPLY, 32, xid,
                                 addr.node_dpid(lab.cluster.node("node-a").index), 0, 254, 0, 0, 0))
        wait_for(lambda: sock.recv(65536, socket.MSG_DONTWAIT) == b"" if _readable(sock) else False, timeout=5,
                 what="the controller to close the impostor's connection")
    with open(lab.controller.log_path) as f:
        assert "refused a second connection" in f.read()
    lab.publish()  # the real switches still obey


def _readable(sock) -> bool:
    import select
    return bool(select.select([sock], [], [], 0.1)[0])


NOBODY_PROBE = """
import fcntl, os, socket, sys
results = []
try:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sys.argv[1])
    results.append("connected")
except OSError as e:
    results.append(type(e).__name__)
try:
    fd = os.open(sys.argv[2], os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    results.append("locked")
except OSError as e:
    results.append(type(e).__name__)
print(" ".join(results))
"""


def test_another_local_user_cannot_reach_the_controller_or_hold_the_lock(lab):
    done = subprocess.run([sys.executable, "-I", "-c", NOBODY_PROBE, lab.controller.socket_path, LOCK_PATH],
                          user="nobody", capture_output=True, text=True, timeout=30, cwd="/")
    assert done.stdout.split() == ["PermissionError", "PermissionError"], done.stderr
    assert oct(os.stat(SOCKET_ROOT).st_mode & 0o777) == "0o700"
    assert oct(os.stat(lab.run.path).st_mode & 0o777) == "0o700"
    assert oct(os.stat(LOCK_PATH).st_mode & 0o777) == "0o600"
