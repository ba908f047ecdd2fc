"""Benchmark 5, the probe itself: how many requests per second it reaches, and what it costs.

On the default scenario's cluster (``examples/seed``: three nodes, two pods, a Cluster Service), the
lab's probe (``lab.measure.probe``, run in the client namespace as every scenario runs it) sends N requests
through node-a's nodePort at several concurrencies. For each, beside the rate and latency: the CPU
time of the probe process (less what an empty probe costs to start), of the pods' HTTP server, and of
Open vSwitch over the same requests. If the probe used a small share and Open vSwitch the most, the
lab measures the network and not itself.

Beside it, where the machine has a C compiler, the same requests from ``bench/tools/refclient.c``: a
client that makes the probe's system calls and nothing else. Its CPU per request is the floor any client
pays the kernel (and, in a virtual machine, the hypervisor: every sleep in epoll_wait and every wake-up
costs more there than the syscalls around it); the probe's CPU above that floor is the probe's own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from bench.labtools import run_json, time_lock
from bench.machine import cpu_seconds, ovs_pid
from bench.report import BenchResult, Figure, Goal
from bench.stats import median, percentile
from lab.cloud.network import LabNetwork
from lab.kube import addressing as addr
from lab.kube.manifests import load_manifests
from lab.scenarios.cluster_vs_local import SEED

DEFAULT_CONCURRENCY = 8  # lab.measure.probe's default, used by every scenario

CLIENT_SHARE_GOAL = Goal("<=", 1 / 3)  # the client must never be what limits a measurement


def probe_argv(target: str, requests: int, concurrency: int) -> list[str]:
    return [sys.executable, "-m", "lab.measure.probe", "--targets", target, "--requests", str(requests),
            "--concurrency", str(concurrency), "--timeout", "2"]


REFERENCE_SOURCE = Path(__file__).parent / "tools" / "refclient.c"


@contextmanager
def reference_client(log):
    """The compiled reference client's path, or None (said once) where there is no C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log("no C compiler (cc): the reference client's floor is not measured")
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="npl-refclient-") as tmp:
        binary = Path(tmp) / "refclient"
        built = subprocess.run([compiler, "-O2", "-o", str(binary), str(REFERENCE_SOURCE)], capture_output=True,
                               text=True, timeout=120)
        if built.returncode != 0:
            log(f"the reference client did not compile ({built.stderr.strip()[-200:]}): its floor is not measured")
            yield None
        else:
            yield binary


def reference_argv(binary: Path, target: str, requests: int, concurrency: int) -> list[str]:
    ip, port = target.rsplit(":", 1)
    return [str(binary), ip, port, str(requests), str(concurrency)]


def one(lab: LabNetwork, target: str, requests: int, concurrency: int, startup_cpu: float,
        argv: list[str] | None = None) -> dict:
    ovs, server = ovs_pid(), lab.workload.pid
    before = (cpu_seconds(ovs), cpu_seconds(server))
    doc, probe_cpu = run_json(lab, addr.CLIENT_NAME, argv or probe_argv(target, requests, concurrency),
                              timeout=60 + requests)
    after = (cpu_seconds(ovs), cpu_seconds(server))
    duration = doc["durationS"]
    if "records" in doc:
        answered = [r for r in doc["records"] if r["ok"]]
        ok = len(answered)
    else:  # the reference client keeps no records, only a count
        answered, ok = [], doc["ok"]
    latencies = [r["latencyMs"] for r in answered]
    work = max(probe_cpu - startup_cpu, 0.0)
    return {
        "concurrency": concurrency, "requests": requests, "ok": ok, "durationS": duration,
        "rate": ok / duration if duration else None,
        "latencyMs": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99)},
        "probeCpuS": round(work, 3), "ovsCpuS": round(after[0] - before[0], 3),
        "serverCpuS": round(after[1] - before[1], 3),
        "probeCores": work / duration if duration else None,
        "ovsCores": (after[0] - before[0]) / duration if duration else None,
        "serverCores": (after[1] - before[1]) / duration if duration else None,
        "probeCpuUsPerRequest": work / requests * 1e6 if requests else None,
        "ovsCpuUsPerRequest": (after[0] - before[0]) / requests * 1e6 if requests else None,
    }


def run(cfg, log) -> BenchResult:
    result = BenchResult()
    cluster = load_manifests([str(SEED)])
    target = f"{addr.node_ip(cluster.node('node-a').index)}:{cluster.services[0].ports[0].node_port}"
    rows: dict[int, list[dict]] = {c: [] for c in cfg.probe_concurrency}
    floor: list[dict] = []
    lab = LabNetwork(cluster)
    lock = time_lock(lab)
    with lab, reference_client(log) as binary:
        run_json(lab, addr.CLIENT_NAME, probe_argv(target, 200, DEFAULT_CONCURRENCY), timeout=60)  # warm up
        startups = [run_json(lab, addr.CLIENT_NAME, probe_argv(target, 0, 1), timeout=60)[1] for _ in range(3)]
        startup_cpu = median(startups)
        for i in range(cfg.runs):
            for c in cfg.probe_concurrency:
                row = one(lab, target, cfg.probe_requests, c, startup_cpu)
                rows[c].append(row)
                log(f"run {i + 1}/{cfg.runs}, concurrency {c}: {row['rate']:.0f} req/s, probe "
                    f"{100 * row['probeCores']:.0f}% of a core, pod servers {100 * row['serverCores']:.0f}%, "
                    f"Open vSwitch {100 * row['ovsCores']:.0f}%")
            if binary is not None and DEFAULT_CONCURRENCY in rows:
                row = one(lab, target, cfg.probe_requests, DEFAULT_CONCURRENCY, 0.0,
                          reference_argv(binary, target, cfg.probe_requests, DEFAULT_CONCURRENCY))
                floor.append(row)
                log(f"run {i + 1}/{cfg.runs}, reference C client: {row['rate']:.0f} req/s, "
                    f"{row['probeCpuUsPerRequest']:.1f} us of CPU per request")
    for c, rs in rows.items():
        default = " (the lab's default)" if c == DEFAULT_CONCURRENCY else ""
        result.figures.append(Figure(f"probe rate, concurrency {c}{default}", "req/s", [r["rate"] for r in rs]))
    if DEFAULT_CONCURRENCY in rows:
        rs = rows[DEFAULT_CONCURRENCY]
        c = DEFAULT_CONCURRENCY
        result.figures += [
            Figure(f"  probe CPU at concurrency {c}", "% core", [100 * r["probeCores"] for r in rs]),
            Figure(f"  probe CPU per request at concurrency {c}", "us", [r["probeCpuUsPerRequest"] for r in rs]),
            Figure("  Open vSwitch CPU, same requests", "% core", [100 * r["ovsCores"] for r in rs]),
            Figure("  Open vSwitch CPU per request", "us", [r["ovsCpuUsPerRequest"] for r in rs]),
            Figure("  probe CPU per request / Open vSwitch CPU per request", "",
                   [r["probeCpuUsPerRequest"] / r["ovsCpuUsPerRequest"] if r["ovsCpuUsPerRequest"] else None
                    for r in rs], CLIENT_SHARE_GOAL),
            Figure("  pod servers CPU, same requests", "% core", [100 * r["serverCores"] for r in rs]),
        ]
        if floor:  # paired by run: the reference client ran right after the probe's concurrency-8 run
            result.figures += [
                Figure("  reference C client (the probe's syscalls only) CPU per request", "us",
                       [r["probeCpuUsPerRequest"] for r in floor]),
                Figure("  reference C client CPU per request / Open vSwitch CPU per request", "",
                       [r["probeCpuUsPerRequest"] / r["ovsCpuUsPerRequest"] if r["ovsCpuUsPerRequest"] else None
                        for r in floor]),
                Figure("  the probe's own CPU (probe - reference) / Open vSwitch CPU", "",
                       [(p["probeCpuUsPerRequest"] - f["probeCpuUsPerRequest"]) / p["ovsCpuUsPerRequest"]
                        if p["ovsCpuUsPerRequest"] else None for p, f in zip(rs, floor, strict=True)]),
            ]
    result.details = {"lockWaitS": lock.get("lockWaitS"), "target": target, "probeStartupCpuS": startup_cpu,
                      "runs": {str(c): rs for c, rs in rows.items()}, "referenceClient": floor}
    return result
