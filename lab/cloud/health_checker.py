"""The cloud load balancer's health checker: real HTTP GETs from outside the cluster to every node.

``python -m lab.cloud.health_checker --config FILE`` runs in the ``lb`` host's network namespace. For every
(Service, node) it sends ``GET path`` to ``nodeIP:port`` every ``interval_s`` (timeout ``timeout_s``); a
200 is a pass, anything else (503, refused, timeout) a failure. A node in rotation leaves it after
``unhealthy_threshold`` consecutive failures and comes back after ``healthy_threshold`` passes, as
cloud health checks do. Verdicts go to the ``out`` file (atomically, on every change), which the
controller watches to program the load balancer's data plane: ``{"services": {"ns/name": {"healthy":
[nodes], "nodes": {node: {"healthy", "lastStatus", "since"}}}}, "events": [{"t", "service", "node",
"healthy", "status"}]}`` (``t``: wall-clock seconds). The config file is watched too, so Services and
policies may change while it runs; checks of an unchanged (Service, node, port) keep their history.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from controllers.state import write_json_atomic


@dataclass
class Check:
    service: str
    node: str
    ip: str
    port: int
    path: str
    healthy: bool
    passes: int = 0
    failures: int = 0
    last_status: int | str | None = None
    since: float = field(default_factory=time.time)

    def record(self, status: int | str, healthy_threshold: int, unhealthy_threshold: int) -> bool:
        """Count one result; True when the verdict flips."""
        self.last_status = status
        if status == 200:
            self.passes, self.failures = self.passes + 1, 0
            if not self.healthy and self.passes >= healthy_threshold:
                self.healthy, self.since = True, time.time()
                return True
        else:
            self.failures, self.passes = self.failures + 1, 0
            if self.healthy and self.failures >= unhealthy_threshold:
                self.healthy, self.since = False, time.time()
                return True
        return False


async def http_status(ip: str, port: int, path: str, timeout: float) -> int | str:
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(ip, port)
            try:
                writer.write(f"GET {path} HTTP/1.1\r\nHost: {ip}:{port}\r\nConnection: close\r\n\r\n".encode())
                line = await reader.readline()
                return int(line.split()[1])
            finally:
                writer.close()
    except TimeoutError:
        return "timeout"
    except OSError:
        return "refused"
    except (ValueError, IndexError):
        return "bad response"


class Checker:
    def __init__(self, config_path: str):
        self.config_path = config_path
        self.checks: dict[tuple[str, str, int], Check] = {}
        self.tasks: dict[tuple[str, str, int], asyncio.Task] = {}
        self.events: list[dict] = []
        self.stamp = None
        self.profile: dict = {}
        self.out = ""

    def load(self) -> bool:
        st = os.stat(self.config_path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self.stamp:
            return False
        self.stamp = stamp
        with open(self.config_path) as f:
            config = json.load(f)
        self.profile, self.out = config["profile"], config["out"]
        wanted = {}
        for target in config["targets"]:
            for node in target["nodes"]:
                key = (target["service"], node["name"], target["port"])
                wanted[key] = self.checks.get(key) or Check(
                    target["service"], node["name"], node["ip"], target["port"], target["path"],
                    healthy=self.profile["initially_healthy"])
        for key in set(self.tasks) - set(wanted):
            self.tasks.pop(key).cancel()
        self.checks = wanted
        for key, check in wanted.items():
            if key not in self.tasks:
                self.tasks[key] = asyncio.create_task(self.run_check(check))
        self.write()
        return True

    async def run_check(self, check: Check) -> None:
        interval, timeout = self.profile["interval_s"], self.profile["timeout_s"]
        while True:
            started = time.monotonic()
            status = await http_status(check.ip, check.port, check.path, timeout)
            if check.record(status, self.profile["healthy_threshold"], self.profile["unhealthy_threshold"]):
                self.events.append({"t": round(check.since, 3), "service": check.service, "node": check.node,
                                    "healthy": check.healthy, "status": status})
                self.write()
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    def write(self) -> None:
        services: dict[str, dict] = {}
        for check in self.checks.values():
            entry = services.setdefault(check.service, {"healthy": [], "nodes": {}})
            entry["nodes"][check.node] = {"healthy": check.healthy, "lastStatus": check.last_status,
                                          "since": round(check.since, 3)}
            if check.healthy:
                entry["healthy"].append(check.node)
        write_json_atomic(self.out, {"services": services, "events": self.events, "profile": self.profile})


async def main_async(config_path: str) -> None:
    checker = Checker(config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        checker.load()
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.1)
        except TimeoutError:
            pass
    for task in checker.tasks.values():
        task.cancel()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.cloud.health_checker", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    asyncio.run(main_async(args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
