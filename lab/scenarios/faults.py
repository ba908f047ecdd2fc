"""Faults while traffic flows: what each one breaks, for how long, and what the lab says about it.

Three nodes, one ``web`` pod on each behind a LoadBalancer Service (Cluster), a Local NodePort Service
for a long download, and a pod ``tester`` on node-c (``examples/faults/``). For every fault, injected one
at a time ``INJECT_AT_S`` into a window of steady traffic:

- external requests: new connections from the outside client to the load balancer's address, at a fixed
  rate (open loop, so a stall shows as failures, not as a slower client);
- in-cluster requests: the same from the pod ``tester`` to the Service's clusterIP, as in-cluster
  clients reach a Service (kube-proxy on tester's node picks any endpoint: the Service is Cluster);
- one established connection: a rate-limited download through node-a's Local nodePort (for the pod
  deletion: from the deleted pod itself), started before the fault; it is broken when it ends short of
  its bytes.

Faults: kube-proxy killed (SIGKILL), the pods' servers killed, one pod's container killed (that pod
alone; kubelet restarts it after CrashLoopBackOff's 10 s), the load balancer's health checker killed,
node-b's uplink down for ``LINK_DOWN_S`` and up again, node-b drained (its pods rescheduled), the
download's pod deleted under it; last, in a child run of the lab, SIGINT twice and SIGTERM during its
teardown. A request counts as served only when a pod answered it in full (``lab.measure.probe``).
"Time to converge" runs from the injection to the first request of the last unbroken run of served
ones (0 when nothing failed; "not within the window" when the last request failed).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lab.cloud.network import LabNetwork
from lab.emulation.resources import unowned_resources
from lab.kube import addressing as addr
from lab.kube.manifests import load_manifests
from lab.measure.report import format_table
from lab.scenarios import Outcome

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "faults"
RATE = 20.0  # new connections per second, per stream
TIMEOUT_S = 1.0
INJECT_AT_S = 1.0
LINK_DOWN_S = 2.0
BULK_BYTES = 2_500_000
BULK_RATE = "1M"  # curl --limit-rate: the download lasts about 2.5 s, across the fault
SERVICE, SERVICE_PORT, LOCAL_PORT = "web", 80, 30101


@dataclass
class Fault:
    name: str
    inject: Callable[[LabNetwork], object]
    window_s: float = 4.0
    recover: Callable[[LabNetwork], object] | None = None  # LINK_DOWN_S after the injection
    download_from: Callable[[LabNetwork], str] | None = None  # "ip:port" (default: node-a's Local nodePort)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=RATE, help="requests per second per stream (default 20)")
    parser.add_argument("--no-child", action="store_true", help="skip the child run interrupted during teardown")


def _kill(proc) -> None:
    os.kill(proc.pid, signal.SIGKILL)


def drain(lab: LabNetwork, node: str) -> list[str]:
    """``kubectl drain``: every pod on ``node`` is evicted and comes back on the node with fewest pods
    (the lab's scheduler's last rule), with the same name; returns where each went."""
    moved = []
    others = [n.name for n in lab.cluster.nodes if n.name != node]
    for pod in list(lab.cluster.pods_on(node)):
        target = min(others, key=lambda n: (len(lab.cluster.pods_on(n)), others.index(n)))
        lab.move_pod(pod.name, target)
        moved.append(f"{pod.name} -> {target}")
        lab.log(f"drain {node}: pod {pod.name} evicted, rescheduled on {target}")
    return moved


def delete(lab: LabNetwork, pod: str) -> None:
    lab.delete_pod(pod)
    lab.log(f"pod {pod} deleted (endpoints first, then its listeners; its network once its connections ended)")


def lb_events(lab: LabNetwork, since: float) -> list[str]:
    """The load balancer's verdict changes since ``since``: what the cloud side noticed of a fault."""
    return [f"LB: {e['node']} {'back in' if e['healthy'] else 'out of'} rotation ({e['status']}) "
            f"at +{e['t'] - since:.1f} s" for e in lab.lb_health().get("events", []) if e["t"] >= since]


def faults() -> list[Fault]:
    def download_pod(lab):
        return lab.cluster.pods_on("node-a")[0].name
    return [
        Fault("kube-proxy controller killed (SIGKILL)", lambda lab: _kill(lab.controller.proc)),
        Fault("pod servers killed (SIGKILL)", lambda lab: _kill(lab.workload)),
        Fault("one pod's container killed (web on node-c)", lambda lab: lab.kill_container(
            next(p.name for p in lab.cluster.pods_on("node-c") if p.labels.get("app") == "web")),
            window_s=13.0),
        Fault("health checker killed (SIGKILL)", lambda lab: _kill(lab.checker)),
        Fault(f"node-b uplink down {LINK_DOWN_S:.0f} s, then up", lambda lab: lab.set_uplink("node-b", False),
              window_s=4.0 + LINK_DOWN_S, recover=lambda lab: lab.set_uplink("node-b", True)),
        Fault("node-b drained", lambda lab: drain(lab, "node-b"), window_s=5.0),
        Fault("pod deleted mid-download", lambda lab: delete(lab, download_pod(lab)), window_s=5.0,
              download_from=lambda lab: f"{lab.cluster.pod(download_pod(lab)).ip}:8080"),
    ]


def run(args, progress) -> Outcome:
    logged: list[tuple[float, str]] = []

    def log(line: str) -> None:
        logged.append((time.time(), line))
        progress(line)

    cluster = load_manifests([str(EXAMPLES)])
    rows = []
    with LabNetwork(cluster, log=log, lb_profile="fast") as lab:
        warnings = list(cluster.warnings) + lab.warnings
        for fault in faults():
            progress(f"fault: {fault.name}")
            rows.append(measure(lab, fault, args.rate, logged))
        restarts = lab.restarts
    if not args.no_child:
        progress("fault: SIGINT x2 + SIGTERM during a child run's teardown")
        rows.append(interrupt_teardown())
    report = {"scenario": "faults", "ratePerS": args.rate, "timeoutS": TIMEOUT_S, "injectAtS": INJECT_AT_S,
              "inCluster": f"pod tester to the clusterIP of Service {SERVICE} (port {SERVICE_PORT})",
              "faults": rows, "restarts": restarts}
    return Outcome(report=report, table=render(rows), verdict=verdict(rows), warnings=warnings)


def _stream(lab: LabNetwork, target: str, requests: int, rate: float, host: str, out: dict, key: str) -> None:
    try:
        out[key] = lab.probe([target], requests, timeout=TIMEOUT_S, rate=rate, host=host)
    except Exception as e:  # noqa: BLE001 - a probe that could not run is a result too
        out[key] = {"error": str(e)}


def stream_result(probe: dict, injected: float) -> dict:
    """Failures of one request stream and when it converged, in seconds after the injection."""
    if "records" not in probe:
        return {"requests": 0, "failed": None, "errors": {}, "convergedAfterS": None, "error": probe.get("error")}
    origin = datetime.fromisoformat(probe["startedAt"]).timestamp()
    records = probe["records"]
    failed = [r for r in records if not r["ok"]]
    errors: dict[str, int] = {}
    for r in failed:
        errors[r["error"]] = errors.get(r["error"], 0) + 1
    if not failed:
        converged = 0.0
    elif not records[-1]["ok"]:
        converged = None
    else:
        last_bad = max(i for i, r in enumerate(records) if not r["ok"])
        converged = round(max(0.0, origin + records[last_bad + 1]["t"] - injected), 2)
    return {"requests": len(records), "failed": len(failed), "errors": errors, "convergedAfterS": converged}


def measure(lab: LabNetwork, fault: Fault, rate: float, logged: list) -> dict:
    requests = int(fault.window_s * rate)
    vip = lab.load_balancer_ip(SERVICE)
    cluster_ip = lab.cluster_ip(SERVICE)
    node_a = addr.node_ip(lab.cluster.node("node-a").index)
    probes: dict = {}
    threads = [
        threading.Thread(target=_stream, args=(lab, f"{vip}:{SERVICE_PORT}", requests, rate, addr.CLIENT_NAME,
                                               probes, "ext")),
        threading.Thread(target=_stream, args=(lab, f"{cluster_ip}:{SERVICE_PORT}", requests, rate, "tester",
                                               probes, "in")),
    ]
    download = lab.host(addr.CLIENT_NAME).popen(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}", "--limit-rate", BULK_RATE, "-m", "30",
         f"http://{fault.download_from(lab) if fault.download_from else f'{node_a}:{LOCAL_PORT}'}"
         f"/bulk?bytes={BULK_BYTES}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    started = time.time()
    for t in threads:
        t.start()
    time.sleep(max(0.0, started + INJECT_AT_S - time.time()))
    injected = time.time()
    restarts_before = len(lab.restarts)
    detail = fault.inject(lab)
    if fault.recover is not None:
        time.sleep(max(0.0, injected + LINK_DOWN_S - time.time()))
        fault.recover(lab)
    for t in threads:
        t.join()
    out, _ = download.communicate(timeout=60)
    got = int(out or 0)
    ext, inside = stream_result(probes["ext"], injected), stream_result(probes["in"], injected)
    times = [s["convergedAfterS"] for s in (ext, inside)]
    return {
        "fault": fault.name, "detail": detail if isinstance(detail, list) else None,
        "external": ext, "inCluster": inside,
        "convergedAfterS": None if None in times else max(times),
        "established": {"connections": 1, "broken": int(download.returncode != 0 or got != BULK_BYTES),
                        "bytes": got, "expected": BULK_BYTES, "curlExit": download.returncode},
        "logged": [line for t, line in logged if t >= injected - 0.05 and not line.startswith("fault:")]
        + lb_events(lab, injected),
        "restarts": lab.restarts[restarts_before:],
    }


def interrupt_teardown() -> dict:
    """A child ``python -m lab apply`` gets SIGINT as its teardown starts, SIGINT again and SIGTERM: it must
    finish the teardown, say it deferred them, exit as interrupted and leave nothing behind."""
    before = set(unowned_resources())
    argv = [sys.executable, "-m", "lab", "apply", "-f", str(REPO / "examples" / "seed"), "--requests", "1"]
    child = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines, signalled = [], None
    for line in child.stderr:
        lines.append(line.rstrip())
        if "tearing down" in line and signalled is None:
            signalled = time.monotonic()
            for sig in (signal.SIGINT, signal.SIGINT, signal.SIGTERM):
                child.send_signal(sig)
                time.sleep(0.02)
    child.wait(timeout=120)
    stopped = None if signalled is None else round(time.monotonic() - signalled, 2)
    left = sorted(set(unowned_resources()) - before)
    said = [ln for ln in lines if "during teardown" in ln or ln.startswith(("interrupted", "error"))]
    return {"fault": "SIGINT x2 + SIGTERM during a child run's teardown", "external": None, "inCluster": None,
            "convergedAfterS": stopped, "established": None, "exitCode": child.returncode, "leftBehind": left,
            "logged": said, "restarts": []}


def _failed(stream: dict | None) -> str:
    if stream is None:
        return "-"
    if stream["failed"] is None:
        return "probe failed"
    return f"{stream['failed']}/{stream['requests']}"


def render(rows: list[dict]) -> str:
    table = []
    for r in rows:
        converged = "-" if r["convergedAfterS"] is None and r["external"] is None else (
            "not within the window" if r["convergedAfterS"] is None else f"{r['convergedAfterS']:.2f} s")
        if r["established"] is None:
            broken = f"exit {r['exitCode']}, left {len(r['leftBehind'])}"
        else:
            broken = f"{r['established']['broken']}/{r['established']['connections']}"
        said = "; ".join(r["logged"][:3]) or "-"
        table.append([r["fault"], _failed(r["external"]), _failed(r["inCluster"]), converged, broken,
                      said[:150]])
    return format_table(["fault", "failed external", "failed in-cluster", "time to converge",
                         "established broken", "what the lab logged"], table)


def verdict(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        if r["external"] is None:
            ok = r["exitCode"] == 130 and not r["leftBehind"]
            lines.append(f"{r['fault']}: exit {r['exitCode']}, stopped {r['convergedAfterS']} s after the first "
                         f"signal, {'nothing' if not r['leftBehind'] else ', '.join(r['leftBehind'])} left behind"
                         f"{'' if ok else ' (NOT clean)'}.")
            continue
        failed = sum(s["failed"] or 0 for s in (r["external"], r["inCluster"]))
        lines.append(f"{r['fault']}: {failed} requests failed, "
                     f"{r['established']['broken']} established connection broken, "
                     f"{len(r['restarts'])} restart(s) by the supervisor.")
    return lines
