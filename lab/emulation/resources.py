"""Ownership of everything the lab creates: one run directory per run, a machine-wide lock, exact-name cleanup.

A run records, as it creates them, the bridges, root-namespace interfaces and process ids it owns in
``/run/nodeport-lab/<run>/resources.json``. Teardown and ``python -m lab clean`` remove exactly those
names and kill exactly those processes (after checking that the pid still runs the recorded command,
since pids are reused). Nothing here matches by a broad pattern, so the lab never touches a bridge,
interface or process it did not make. Only one lab network may exist on a machine at a time (the
lock), because all userspace bridges share one Open vSwitch datapath and its conntrack.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field

from controllers.state import write_json_atomic
from lab.errors import LabError

RUN_ROOT = os.environ.get("NPL_RUN_ROOT", "/run/nodeport-lab")
LOCK_PATH = os.path.join(RUN_ROOT, "lock")


@dataclass
class Resources:
    owner_pid: int
    bridges: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    processes: dict[str, list] = field(default_factory=dict)  # pid -> [what, cmdline marker]


class RunDir:
    """The directory of one run and its resource record."""

    def __init__(self, path: str):
        self.path = path
        self.resources = Resources(owner_pid=os.getpid())

    @classmethod
    def create(cls) -> RunDir:
        os.makedirs(RUN_ROOT, exist_ok=True)
        path = os.path.join(RUN_ROOT, f"run-{os.getpid()}-{int(time.time())}")
        os.makedirs(path)
        run = cls(path)
        run.save()
        return run

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def save(self) -> None:
        write_json_atomic(self.file("resources.json"), asdict(self.resources))

    def own_bridges(self, names: list[str]) -> None:
        self.resources.bridges += [n for n in names if n not in self.resources.bridges]
        self.save()

    def own_interfaces(self, names: list[str]) -> None:
        self.resources.interfaces += [n for n in names if n not in self.resources.interfaces]
        self.save()

    def own_process(self, pid: int, what: str) -> None:
        self.resources.processes[str(pid)] = [what, _cmdline(pid)]
        self.save()

    def disown_process(self, pid: int) -> None:
        self.resources.processes.pop(str(pid), None)
        self.save()


class MachineLock:
    """One lab network per machine; held for the life of the run, released by the kernel if we die."""

    def __init__(self):
        self.fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(RUN_ROOT, exist_ok=True)
        self.fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o644)
        # Tests and helpers that share a machine may queue for it (NPL_LOCK_WAIT seconds); users are told.
        deadline = time.monotonic() + float(os.environ.get("NPL_LOCK_WAIT", "0"))
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
                os.close(self.fd)
                self.fd = None
                raise LabError(f"another lab network is running on this machine (pid {holder}); "
                               "wait for it to finish (one network at a time)") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def runs(pid: int, prefix: bytes) -> bool:
    """Whether process ``pid`` runs a command line starting with ``prefix`` (NUL-separated, as in /proc):
    true once a program started through mnexec has exec'd, or once it has set its process title."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().startswith(prefix)
    except OSError:
        return False


def kill_owned(pid: int, cmdline: str, grace_s: float = 3.0) -> bool:
    """SIGTERM then SIGKILL one recorded process, only if it still runs the recorded command."""
    current = _cmdline(pid)
    if not current or (cmdline and current != cmdline):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if _cmdline(pid) != current:
            return True
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    except ProcessLookupError:
        pass
    return True


def start_process(run: RunDir, argv: list[str], log_path: str, what: str) -> subprocess.Popen:
    """Start one of the lab's background processes in its own session, its output appended to
    ``log_path``, and record it in the run so a crashed run's leftovers can be found by pid."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    run.own_process(proc.pid, what)
    return proc


def stop_process(run: RunDir | None, proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """Stop one process we started, by its pid, and forget it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace_s)
    if run is not None:
        run.disown_process(proc.pid)


def remove_recorded(resources: Resources) -> list[str]:
    """Kill, delete and remove what a run recorded; return what was actually found and removed."""
    removed = []
    for pid, (what, cmdline) in list(resources.processes.items()):
        if kill_owned(int(pid), cmdline):
            removed.append(f"process {pid} ({what})")
    existing = set(subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True,
                                  text=True).stdout.split()) if shutil.which("ovs-vsctl") else set()
    for br in resources.bridges:
        if br in existing:
            subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", br], capture_output=True)
            removed.append(f"bridge {br}")
        if os.path.exists(f"/sys/class/net/{br}"):
            subprocess.run(["ip", "link", "del", br], capture_output=True)
    for intf in resources.interfaces:
        if os.path.exists(f"/sys/class/net/{intf}"):
            subprocess.run(["ip", "link", "del", intf], capture_output=True)
            removed.append(f"interface {intf}")
    return removed


def recorded_runs() -> list[tuple[str, Resources, bool]]:
    """Every run directory with its record and whether its owner still runs (a live run is not stale)."""
    runs = []
    if not os.path.isdir(RUN_ROOT):
        return runs
    for name in sorted(os.listdir(RUN_ROOT)):
        record = os.path.join(RUN_ROOT, name, "resources.json")
        if name.startswith("run-") and os.path.isfile(record):
            try:
                with open(record) as f:
                    resources = Resources(**json.load(f))
            except (OSError, ValueError, TypeError):
                continue
            runs.append((name, resources, bool(_cmdline(resources.owner_pid))))
    return runs


def clean_stale_runs() -> list[str]:
    """Remove what crashed runs left behind. A run whose owner is alive is someone else's: skip it."""
    report = []
    if not os.path.isdir(RUN_ROOT):
        return report
    for name in sorted(os.listdir(RUN_ROOT)):
        path = os.path.join(RUN_ROOT, name)
        record = os.path.join(path, "resources.json")
        if not name.startswith("run-") or not os.path.isfile(record):
            continue
        with open(record) as f:
            resources = Resources(**json.load(f))
        if _cmdline(resources.owner_pid):
            report.append(f"{name}: still running (pid {resources.owner_pid}), left alone")
            continue
        removed = remove_recorded(resources)
        shutil.rmtree(path, ignore_errors=True)
        report.append(f"{name}: removed {', '.join(removed) if removed else 'its run directory'}")
    return report
