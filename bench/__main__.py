"""``python -m bench``: run the benchmarks, write ``bench/results/<date>.json``, print the table.

    sudo .venv/bin/python -m bench                       all five, 3 runs each (a few minutes)
    sudo .venv/bin/python -m bench --quick               one run, small sizes (well under a minute)
    sudo .venv/bin/python -m bench --only datapath --runs 5
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from bench import machine
from bench.config import BENCHMARKS, Config, parse_sizes, quick, select
from bench.report import BenchResult, busy_warning, new_document, render_machine, render_table

RESULTS = Path(__file__).resolve().parent / "results"
MODULES = {"time-to-result": "bench.time_to_result", "datapath": "bench.datapath",
           "control-plane": "bench.control_plane", "scale": "bench.scale", "probe-rate": "bench.probe_rate"}


def log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench", description="How fast the lab runs, how far it "
                                 "scales on one machine, and what the NodePort data path costs.")
    ap.add_argument("--quick", action="store_true", help="one run, small sizes: well under a minute")
    ap.add_argument("--runs", type=int, help="runs per figure (default 3; figures are medians)")
    ap.add_argument("--heavy-runs", type=int, help="runs of the slowest cases, clusters of 20 nodes or "
                    "more (default 1)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="some of: " + ", ".join(BENCHMARKS))
    ap.add_argument("--scale-nodes", metavar="N,N", help="cluster sizes for scale (default 5,10,20,50)")
    ap.add_argument("--services", metavar="N,N", help="Service counts for control-plane (default 1,100,1000)")
    ap.add_argument("--change-backgrounds", metavar="N,N",
                    help="Services installed while pods change, for control-plane (default 0,100)")
    ap.add_argument("--changes", type=int, help="pod changes per background (default 100)")
    ap.add_argument("--out", metavar="FILE", help="results file (default bench/results/<date>.json)")
    return ap


def config_from(args: argparse.Namespace) -> Config:
    cfg = quick(Config()) if args.quick else Config()
    updates = {"only": select(args.only)}
    if args.runs is not None:
        updates["runs"] = args.runs
    if args.heavy_runs is not None:
        updates["heavy_runs"] = args.heavy_runs
    if args.scale_nodes:
        updates["scale_nodes"] = parse_sizes(args.scale_nodes)
    if args.services:
        updates["cp_services"] = parse_sizes(args.services)
    if args.change_backgrounds:
        updates["change_backgrounds"] = parse_sizes(args.change_backgrounds, minimum=0)
    if args.changes is not None:
        updates["changes"] = args.changes
    cfg = replace(cfg, **updates)
    if cfg.runs < 1 or cfg.heavy_runs < 1 or cfg.changes < 1:
        raise ValueError("--runs, --heavy-runs and --changes must be at least 1")
    return cfg


def results_path(now: datetime) -> Path:
    return RESULTS / f"{now.strftime('%Y-%m-%d-%H%M%S')}.json"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config_from(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("error: the benchmarks build network namespaces and switches, so they must run as root: use sudo",
              file=sys.stderr)
        return 2
    now = datetime.now().astimezone()
    facts = machine.facts()
    facts["loadAverage"] = {"start": machine.load_average()}
    facts["pythonLoopS"] = machine.python_speed()
    doc = new_document(facts, cfg.to_dict(), now.isoformat(timespec="seconds"))
    started = time.monotonic()
    failed = False
    for name in cfg.only:
        log(f"{name}")
        meter = machine.CpuMeter()
        t0 = time.monotonic()
        try:
            result = importlib.import_module(MODULES[name]).run(cfg, log)
        except KeyboardInterrupt:
            print("interrupted: the lab network was torn down", file=sys.stderr)
            return 130
        except Exception as exc:  # one benchmark failing must not lose the others' results
            result = BenchResult(error=f"{type(exc).__name__}: {exc}")
            failed = True
        result.duration_s = time.monotonic() - t0
        cpu = meter.stop()
        result.details["cpu"] = cpu
        warning = busy_warning(cpu["otherCores"], facts["cores"])
        if warning:
            result.warnings.append(warning)
        doc["benchmarks"][name] = result.to_dict()
    facts["loadAverage"]["end"] = machine.load_average()
    doc["durationS"] = round(time.monotonic() - started, 1)
    out = Path(args.out) if args.out else results_path(now)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(render_machine(facts))
    print()
    print(render_table(doc["benchmarks"]))
    for name, result in doc["benchmarks"].items():
        for warning in dict.fromkeys(result["warnings"]):
            print(f"warning: {name}: {warning}", file=sys.stderr)
    waited = sum(r["details"].get("lockWaitS") or 0 for r in doc["benchmarks"].values())
    print(f"\nresults written to {out} ({doc['durationS']:.0f} s, of which {waited:.0f} s queueing for the "
          "machine lock behind other networks)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
