"""Benchmark 1, time to result: ``python -m lab`` (the default scenario) end to end, split into phases.

Each run starts a fresh interpreter, as a user does, that runs the real command line (``lab.cli.main``)
with one change: the scenario's ``LabNetwork`` is a subclass that notes the time at each step, so the
split is of the code users run, not of a copy of it. Phases:

- startup: interpreter start and imports, up to the scenario building its cluster;
- lock wait: queueing for the machine lock behind other engineers' networks (not counted in the total);
- build: controller, network, flows, servers (``LabNetwork.timings``);
- experiment: publishing Cluster then Local, and probing every node; within it, the time spent reading
  the bytes between nodes (``inter_node_bytes``: the underlay's port counters; before, flow counters
  behind ``ovs-appctl revalidator/wait``) and every link's port counters, running the probe processes,
  and waiting for the switches to acknowledge each state;
- teardown, then the report and the interpreter's exit.
"""

from __future__ import annotations

import time

T_MODULE = time.monotonic()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

from bench.report import BenchResult, Figure, Goal  # noqa: E402
from bench.stats import median  # noqa: E402

GOAL_S = 4.0
REFUSAL_GOAL_S = 0.3
REFUSALS = 5  # fresh interpreters per run: the figure is their median
BUILD_PHASES = ("controller", "network", "flows", "servers")


def _child(t0: float, out: str, requests: int) -> int:
    import lab.cli
    import lab.scenarios.cluster_vs_local as scenario
    from bench.labtools import time_lock
    from lab.cloud.network import LabNetwork

    marks: dict = {"t0": t0, "module": T_MODULE, "imported": time.monotonic(), "calls": {}}

    def count(name: str, seconds: float) -> None:
        calls = marks["calls"].setdefault(name, {"n": 0, "s": 0.0})
        calls["n"] += 1
        calls["s"] += seconds

    class TimedLabNetwork(LabNetwork):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.lock_noted = time_lock(self)

        def start(self):
            marks["startBegin"] = time.monotonic()
            super().start()
            marks["startEnd"] = time.monotonic()
            marks["lockWaitS"] = self.lock_noted.get("lockWaitS", 0.0)
            marks["timings"] = dict(self.timings)

        def stop(self):
            marks.setdefault("stopBegin", time.monotonic())
            try:
                super().stop()
            finally:
                marks.setdefault("stopEnd", time.monotonic())

        def publish(self):
            started = time.monotonic()
            super().publish()
            count("publish", time.monotonic() - started)

        def flow_bytes(self, bridge, table):  # labs before port-counter reads of inter-node bytes
            started = time.monotonic()
            try:
                return super().flow_bytes(bridge, table)
            finally:
                count("counterRead", time.monotonic() - started)

        def inter_node_bytes(self):
            started = time.monotonic()
            try:
                return super().inter_node_bytes()
            finally:
                count("counterRead", time.monotonic() - started)

        def port_bytes(self, bridge):  # newer labs also read every link's port counters per entry
            started = time.monotonic()
            try:
                return super().port_bytes(bridge)
            finally:
                count("portCounterRead", time.monotonic() - started)

        def interface_bytes(self, names):  # every link's counters, from the kernel (lab.emulation.counters)
            started = time.monotonic()
            try:
                return super().interface_bytes(names)
            finally:
                count("portCounterRead", time.monotonic() - started)

        def probe(self, *args, **kwargs):
            started = time.monotonic()
            try:
                return super().probe(*args, **kwargs)
            finally:
                count("probe", time.monotonic() - started)

    scenario.LabNetwork = TimedLabNetwork
    report_path = out + ".report.json"
    shown, progress = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(shown), contextlib.redirect_stderr(progress):
        code = lab.cli.main(["--requests", str(requests), "--json", report_path])
    marks["end"] = time.monotonic()
    marks["code"] = code
    if code != 0:
        marks["error"] = progress.getvalue().strip().splitlines()[-1:] or ["?"]
    else:
        with open(report_path) as f:
            report = json.load(f)
        marks["results"] = [{"policy": r["policy"], "node": r["node"], "ok": r["ok"], "failed": r["failed"],
                             "durationS": r["durationS"]} for r in report["results"]]
        os.unlink(report_path)
    with open(out, "w") as f:
        json.dump(marks, f)
    return code


def phases(marks: dict, exit_at: float) -> dict[str, float]:
    """Seconds per phase of one run (pure). ``exit_at``: when the parent saw the child exit."""
    t0 = marks["t0"]
    lock = marks.get("lockWaitS", 0.0)
    timings = marks.get("timings", {})
    start_s = marks["startEnd"] - marks["startBegin"]
    calls = marks.get("calls", {})
    experiment = marks["stopBegin"] - marks["startEnd"]
    counted = {k: calls.get(k, {}).get("s", 0.0) for k in ("counterRead", "portCounterRead", "probe", "publish")}
    out = {
        "startup": marks["startBegin"] - t0,
        "checks": start_s - lock - sum(timings.get(p, 0.0) for p in BUILD_PHASES),
        **{p: timings.get(p, 0.0) for p in BUILD_PHASES},
        "build": sum(timings.get(p, 0.0) for p in BUILD_PHASES),
        "experiment": experiment,
        "counterReads": counted["counterRead"],
        "portCounterReads": counted["portCounterRead"],
        "probes": counted["probe"],
        "publishes": counted["publish"],
        "experimentOther": experiment - sum(counted.values()),
        "teardown": marks["stopEnd"] - marks["stopBegin"],
        "reportAndExit": exit_at - marks["stopEnd"],
        "lockWait": lock,
    }
    out["total"] = exit_at - t0 - lock
    return out


def refusal_seconds(repo: str) -> list[float]:
    """``python -m lab apply -f`` on the seed example with an out-of-range nodePort, from process start to
    exit with its one-line error: what a user waits for a typo."""
    times = []
    with tempfile.TemporaryDirectory(prefix="npl-bench-") as tmp:
        for name in os.listdir(os.path.join(repo, "examples", "seed")):
            with open(os.path.join(repo, "examples", "seed", name)) as f:
                text = f.read()
            with open(os.path.join(tmp, name), "w") as f:
                f.write(text.replace("nodePort: 30007", "nodePort: 40007"))
        for _ in range(REFUSALS):
            t0 = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "lab", "apply", "-f", tmp], cwd=repo, capture_output=True,
                                  text=True)
            times.append(time.monotonic() - t0)
            if done.returncode != 2 or "nodePort" not in done.stderr:
                raise RuntimeError(f"the bad manifest was not refused as expected (code {done.returncode}): "
                                   f"{done.stderr.strip()[-300:]}")
    return times


def run(cfg, log) -> BenchResult:
    result = BenchResult()
    runs = []
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    refusals = [median(refusal_seconds(repo)) for _ in range(cfg.runs)]
    for i in range(cfg.runs):
        with tempfile.TemporaryDirectory(prefix="npl-bench-") as tmp:
            out = os.path.join(tmp, "marks.json")
            t0 = time.monotonic()
            proc = subprocess.run([sys.executable, "-m", "bench.time_to_result", "--child", "--t0", repr(t0),
                                   "--out", out, "--requests", str(cfg.scenario_requests)],
                                  cwd=repo, capture_output=True, text=True)
            exit_at = time.monotonic()
            if not os.path.exists(out):
                raise RuntimeError(f"the scenario run failed (code {proc.returncode}): "
                                   f"{proc.stderr.strip()[-400:]}")
            with open(out) as f:
                marks = json.load(f)
        if marks.get("code") != 0:
            raise RuntimeError(f"python -m lab failed: {marks.get('error')}")
        split = phases(marks, exit_at)
        runs.append({"phases": split, "calls": marks["calls"], "results": marks.get("results")})
        log(f"run {i + 1}/{cfg.runs}: {split['total']:.2f} s (build {split['build']:.2f}, experiment "
            f"{split['experiment']:.2f}, teardown {split['teardown']:.2f}, lock wait {split['lockWait']:.1f})")
        ok = sum(r["ok"] for r in marks.get("results", []))
        if ok != 5 * cfg.scenario_requests:
            result.warnings.append(f"run {i + 1}: {ok} requests answered, expected {5 * cfg.scenario_requests} "
                                   "(all but Local via node-c)")
    col = lambda key: [r["phases"][key] for r in runs]  # noqa: E731
    result.figures = [
        Figure("default scenario end to end (python -m lab)", "s", col("total"), Goal("<=", GOAL_S),
               note="lock wait excluded"),
        Figure("  startup (interpreter, imports)", "s", col("startup")),
        Figure("  build: controller, network, flows, servers", "s", col("build")),
        Figure("  experiment: 2 policies x 3 nodes x 200 requests", "s", col("experiment")),
        Figure("    of which reading bytes between nodes (underlay port counters)", "s", col("counterReads")),
        Figure("    of which reading port counters", "s", col("portCounterReads")),
        Figure("    of which probe processes", "s", col("probes")),
        Figure("  teardown", "s", col("teardown")),
        Figure("a refused manifest answers (python -m lab apply -f, bad nodePort)", "s", refusals,
               Goal("<=", REFUSAL_GOAL_S), note=f"median of {REFUSALS} fresh interpreters per run"),
    ]
    calls = runs[0]["calls"] if runs else {}
    result.details = {
        "lockWaitS": sum(r["phases"]["lockWait"] for r in runs),
        "runs": runs,
        "medianPhasesS": {k: round(median(col(k)), 3) for k in runs[0]["phases"]} if runs else {},
        "counterReadsPerRun": calls.get("counterRead", {}).get("n"),
        "portCounterReadsPerRun": calls.get("portCounterRead", {}).get("n"),
        "probesPerRun": calls.get("probe", {}).get("n"),
    }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.time_to_result")
    ap.add_argument("--child", action="store_true", required=True)
    ap.add_argument("--t0", type=float, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--requests", type=int, default=200)
    args = ap.parse_args(argv)
    return _child(args.t0, args.out, args.requests)


if __name__ == "__main__":
    sys.exit(main())
