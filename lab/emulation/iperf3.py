"""Real iperf3 processes in the lab's hosts, owned by the run.

A pod's container port named ``iperf3`` (``lab.kube.endpoints.real_server_ports``) is served by a real
``iperf3 -s`` that runs in the foreground in the pod's namespace: the network starts it after the pods'
HTTP servers and stops it, by pid, before the network goes (a daemonised ``iperf3 -D`` would outlive the
network and keep the namespace alive). Clients run the same way in any host (``start_client``); every
process is recorded in the run's resources once it runs iperf3, so that ``python -m lab clean`` can kill
it after a crash, and is killed by pid in a ``finally`` otherwise.
"""

from __future__ import annotations

import shutil
import subprocess

from lab.emulation.resources import RunDir, runs, stop_process
from lab.errors import LabError
from lab.kube.endpoints import real_server_ports
from lab.polling import wait_for

IPERF3 = "iperf3"
CONNECT_TIMEOUT_MS = 1000  # a nodePort that drops (Local, no local pod) fails the client in 1 s
TCP_LISTEN = "0A"  # socket state in /proc/net/tcp


# --- processes ---------------------------------------------------------------------------------------

def _runs_iperf3(pid: int) -> bool:
    return runs(pid, IPERF3.encode() + b"\0")


def _own_once_exec(run: RunDir, proc: subprocess.Popen, what: str) -> None:
    """Record ``proc`` once mnexec has exec'd iperf3 (the record keeps the command line, checked at kill)."""
    wait_for(lambda: proc.poll() is not None or _runs_iperf3(proc.pid), timeout=5, what=f"{what} to start")
    if proc.poll() is None:
        run.own_process(proc.pid, what)


def listening(pid: int, port: int) -> bool:
    """Whether the network namespace of ``pid`` has a TCP socket listening on ``port`` (any address)."""
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == TCP_LISTEN and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except (OSError, StopIteration):
            continue
    return False


def start_iperf3_servers(run: RunDir, host, pod) -> list[subprocess.Popen]:
    """A foreground ``iperf3 -s`` in ``host`` (the pod's Mininet host) for each of the pod's iperf3 ports."""
    ports = real_server_ports(pod)
    if not ports:
        return []
    if shutil.which(IPERF3) is None:
        raise LabError(f"pod {pod.name} has a port named iperf3 but iperf3 is missing: run ./setup.sh as root")
    procs = []
    try:
        for name, port in ports.items():
            log_path = run.file(f"{name}-{pod.name}-{port}.log")
            with open(log_path, "ab") as log:
                proc = host.popen([IPERF3, "-s", "-p", str(port)], stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=log)
            procs.append(proc)
            _own_once_exec(run, proc, f"iperf3 server in {pod.name}:{port}")

            def up(proc=proc, port=port, log_path=log_path):
                if proc.poll() is not None:
                    raise LabError(f"the iperf3 server in pod {pod.name} exited (code {proc.returncode}); "
                                   f"see {log_path}")
                return listening(proc.pid, port)
            wait_for(up, timeout=10, what=f"the iperf3 server in pod {pod.name} to listen on {port}")
    except BaseException:
        for proc in procs:
            stop_process(run, proc)
        raise
    return procs


def iperf3_client_argv(target_ip: str, port: int, seconds: float) -> list[str]:
    return [IPERF3, "-c", target_ip, "-p", str(port), "-t", f"{seconds:g}", "--json",
            "--connect-timeout", str(CONNECT_TIMEOUT_MS)]


def start_client(run: RunDir, host, argv: list[str], what: str) -> subprocess.Popen:
    """Start a client in ``host``'s network namespace (mnexec -a: attach, no new session), owned by the run."""
    proc = subprocess.Popen(["mnexec", "-a", str(host.pid), *argv], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _own_once_exec(run, proc, what)
    except BaseException:
        stop_process(run, proc)
        raise
    return proc
