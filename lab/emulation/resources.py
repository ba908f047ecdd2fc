"""Ownership of everything the lab creates: one run directory per run, a machine-wide lock, exact-name cleanup.

A run records, before it creates them, the bridges, root-namespace interfaces and processes it owns in
``/run/nodeport-lab/<run>/resources.json``. Teardown and ``python -m lab clean`` remove exactly those
names and kill exactly those processes. A process is known by its pid *and* its start time (field 22 of
``/proc/PID/stat``, which no later process with a reused pid can have), and it is recorded before it
runs: ``start_process`` starts it behind a gate (a shell waiting for one line on its stdin), records the
pid, then opens the gate; if the lab dies in between, the gate reads end-of-file and the program never
starts. The owner of a run is known the same way, so a record is never taken for a live run's after a
pid wrap. A run's bridges and interfaces carry its tag (``npl-<tag>-...``, ``lab.kube.addressing``),
chosen here when the run directory is made among the tags that no bridge, interface or run record
uses, so two runs never share a name; a recorded name without its run's tag is never removed. Nothing
here matches by a broad pattern, so the lab never touches a bridge, interface or process it did not
make. Only one lab network may exist on a machine at a time (the lock), because all
userspace bridges share one Open vSwitch datapath and its conntrack; ``lab clean`` takes the same lock,
so it never runs beside a live network. The run root and every run directory are root-only (0700, the
lock file 0600): another local user can neither read a run, reach its controller socket nor hold the
lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import asdict, dataclass, field

from controllers.state import write_json_atomic
from lab.emulation.rcu import restore as restore_rcu
from lab.errors import LabError
from lab.kube import addressing

RUN_ROOT = os.environ.get("NPL_RUN_ROOT", "/run/nodeport-lab")
LOCK_PATH = os.path.join(RUN_ROOT, "lock")
# Open vSwitch connects to a Unix-socket controller only under its own run directory; the lab's sockets
# live in a root-only folder there, one per run (lab.emulation.controller_process).
OVS_RUNDIR = os.environ.get("OVS_RUNDIR", "/var/run/openvswitch")
SOCKET_ROOT = os.path.join(OVS_RUNDIR, "nodeport-lab")


GATE = 'read -r go && exec "$@" </dev/null'  # sh -c: run "$@" only once the lab has recorded the pid


@dataclass
class Resources:
    owner_pid: int
    bridges: list[str] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)
    processes: dict[str, list] = field(default_factory=dict)  # pid -> [what, cmdline]
    # Kept in identity.json beside resources.json, which keeps the first version's four keys so that a
    # lab of that version (which refused unknown keys) can still read this one's records:
    owner_start: int | None = None  # the owner's start time (/proc/PID/stat field 22); None in old records
    starts: dict[str, int] = field(default_factory=dict)  # pid -> its start time
    sockets: list[str] = field(default_factory=list)  # Unix sockets outside the run directory
    tag: str = ""  # the run's name tag (lab.kube.addressing); "" in records of versions before tags

    FIRST_VERSION = ("owner_pid", "bridges", "interfaces", "processes")

    def started(self, pid: str) -> int | None:
        return self.starts.get(pid)

    @classmethod
    def from_json(cls, data: dict) -> Resources:
        """A record as written by this or another version of the lab: fields it does not know are skipped."""
        if not isinstance(data, dict) or not isinstance(data.get("owner_pid"), int):
            raise ValueError("not a run record")
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        return cls(**known)

    def owner_alive(self) -> bool:
        return process_alive(self.owner_pid, self.owner_start, fallback_cmdline=True)

    def names(self) -> list[str]:
        """The recorded bridges and interfaces that are the run's: all of them carry its tag (records of
        versions before tags: every recorded name)."""
        return [n for n in self.bridges + self.interfaces if not self.tag or addressing.tag_of(n) == self.tag]

    def foreign_names(self) -> list[str]:
        """Recorded names without the run's tag: another run's (a damaged or edited record), never touched."""
        return [n for n in self.bridges + self.interfaces if n not in self.names()]


class RunDir:
    """The directory of one run and its resource record."""

    def __init__(self, path: str, tag: str = ""):
        self.path = path
        self.resources = Resources(owner_pid=os.getpid(), owner_start=start_time(os.getpid()), tag=tag)

    @property
    def tag(self) -> str:
        return self.resources.tag

    @classmethod
    def create(cls) -> RunDir:
        """A new run directory, with a tag no bridge, interface or run record uses; from now on this
        process names its bridges and interfaces with it. The caller holds the machine lock, so no
        other run chooses at the same time."""
        private_root()
        path = os.path.join(RUN_ROOT, f"run-{os.getpid()}-{time.time_ns()}")
        try:
            tag = addressing.choose_tag(tags_in_use())
        except ValueError as e:
            raise LabError(str(e)) from None
        os.mkdir(path, 0o700)
        run = cls(path, tag)
        run.save()
        addressing.set_run_tag(tag)
        return run

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def save(self) -> None:
        record = asdict(self.resources)
        write_json_atomic(self.file("identity.json"), {k: v for k, v in record.items()
                                                       if k not in Resources.FIRST_VERSION})
        write_json_atomic(self.file("resources.json"), {k: record[k] for k in Resources.FIRST_VERSION})

    def own_bridges(self, names: list[str]) -> None:
        self.resources.bridges += [n for n in names if n not in self.resources.bridges]
        self.save()

    def own_interfaces(self, names: list[str]) -> None:
        self.resources.interfaces += [n for n in names if n not in self.resources.interfaces]
        self.save()

    def own_socket(self, path: str) -> None:
        self.resources.sockets.append(path)
        self.save()

    def own_process(self, pid: int, what: str) -> None:
        self.own_started(pid, what, _cmdline(pid))

    def own_processes(self, named: list[tuple[int, str]]) -> None:
        """Several processes in one save: the record is rewritten whole on each save, so recording a
        100-node cluster's 1,200 shells one by one cost 1,200 rewrites of a growing record (37 s)."""
        for pid, what in named:
            self.resources.processes[str(pid)] = [what, _cmdline(pid)]
            self.resources.starts[str(pid)] = start_time(pid)
        self.save()

    def own_started(self, pid: int, what: str, cmdline: str) -> None:
        """Record a process by pid, start time and the command line it runs (or will, once exec'd)."""
        self.resources.processes[str(pid)] = [what, cmdline]
        self.resources.starts[str(pid)] = start_time(pid)
        self.save()

    def disown_process(self, pid: int) -> None:
        self.resources.processes.pop(str(pid), None)
        self.resources.starts.pop(str(pid), None)
        self.save()


class MachineLock:
    """One lab network per machine; held for the life of the run, released by the kernel if we die."""

    def __init__(self):
        self.fd: int | None = None

    def acquire(self) -> None:
        wait_s = lock_wait_s()
        private_root()
        self.fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(self.fd, 0o600)  # a lock file made world-readable by an older version is closed too
        # Tests and helpers that share a machine may queue for it (NPL_LOCK_WAIT seconds); users are told.
        deadline = time.monotonic() + wait_s
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


def lock_wait_s() -> float:
    """NPL_LOCK_WAIT: how many seconds to queue for the machine lock (default 0: fail at once)."""
    text = os.environ.get("NPL_LOCK_WAIT", "0").strip() or "0"
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < 10**7:  # also NaN and inf
        raise LabError(f"NPL_LOCK_WAIT={text[:20]!r} is not a number of seconds",
                       "set it to how long to wait for another lab network, e.g. NPL_LOCK_WAIT=600, or unset it")
    return value


def private_root() -> None:
    """The run root, root-only: records, logs, sockets and the lock are nobody else's business."""
    os.makedirs(RUN_ROOT, mode=0o700, exist_ok=True)
    if os.stat(RUN_ROOT).st_uid == os.geteuid():
        os.chmod(RUN_ROOT, 0o700)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of process ``pid``, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """When process ``pid`` started: with the pid, it names one process for good (pids are reused)."""
    stat = _stat(pid)
    return None if stat is None else stat[1]


def process_alive(pid: int, started: int | None, fallback_cmdline: bool = False) -> bool:
    """Whether the process recorded as (pid, start time) still runs (a zombie does not). Old records
    without a start time fall back to "some process has this pid", the best they can say."""
    if started is None:
        return fallback_cmdline and bool(_cmdline(pid))
    stat = _stat(pid)
    return stat is not None and stat[1] == started and stat[0] not in "ZX"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _same_process(pid: int, cmdline: str, started: int | None) -> bool:
    if started is not None:
        return process_alive(pid, started)
    current = _cmdline(pid)  # a record of an older version: the command line is all it kept
    return bool(current) and (not cmdline or current == cmdline)


def runs(pid: int, prefix: bytes) -> bool:
    """Whether process ``pid`` runs a command line starting with ``prefix`` (NUL-separated, as in /proc):
    true once a program started through mnexec has exec'd, or once it has set its process title."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().startswith(prefix)
    except OSError:
        return False


def _signal(pid: int, sig: int) -> None:
    """Signal a recorded process; one that leads its own group (the lab starts them so) with its group."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_owned(pid: int, cmdline: str, grace_s: float = 3.0, started: int | None = None) -> bool:
    """SIGTERM then SIGKILL one recorded process, only if it is still the recorded one."""
    if not _same_process(pid, cmdline, started):
        return False
    started = start_time(pid)
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        if not process_alive(pid, started):
            return True
        time.sleep(0.02)
    _signal(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    return True


def start_process(run: RunDir, argv: list[str], log_path: str, what: str) -> subprocess.Popen:
    """Start one of the lab's background processes in a session (and process group) of its own, its
    output appended to ``log_path``: recorded first, released to run only once the record is on disk."""
    gate_read, gate_write = os.pipe()
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(["sh", "-c", GATE, "npl-gate", *argv], stdin=gate_read, stdout=log,
                                    stderr=log, start_new_session=True)
        os.close(gate_read)
        gate_read = -1
        run.own_started(proc.pid, what, " ".join(argv))  # what /proc shows once the gate has exec'd it
        os.write(gate_write, b"go\n")
    finally:
        if gate_read >= 0:
            os.close(gate_read)
        os.close(gate_write)  # unopened, the gate reads end-of-file and the program never runs
    return proc


def stop_process(run: RunDir | None, proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """Stop one process we started, by its pid, and forget it."""
    if proc.poll() is None:
        _signal(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _signal(proc.pid, signal.SIGKILL)
            proc.wait(timeout=grace_s)
    if run is not None:
        run.disown_process(proc.pid)


def tags_in_use() -> set[str]:
    """Tags of every bridge and interface that exists, and of every run record (live or not): a new
    run's tag is none of them."""
    names = list_bridges() + list_interfaces()
    tags = {addressing.tag_of(n) for n in names}
    if os.path.isdir(RUN_ROOT):
        for entry in os.listdir(RUN_ROOT):
            record = read_record(os.path.join(RUN_ROOT, entry, "resources.json"))
            if record is not None:
                tags |= {record.tag} | {addressing.tag_of(n) for n in record.bridges + record.interfaces}
    return {t for t in tags if t}


def list_interfaces() -> list[str]:
    """Every interface of the root network namespace."""
    return os.listdir("/sys/class/net")


def interface_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def list_bridges() -> list[str]:
    """Every Open vSwitch bridge on the machine (none without Open vSwitch)."""
    if not shutil.which("ovs-vsctl"):
        return []
    return subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True).stdout.split()


def remove_recorded(resources: Resources) -> list[str]:
    """Kill, delete and remove what a run recorded; return what was actually found and removed."""
    removed = []
    for pid, (what, cmdline, *_) in list(resources.processes.items()):
        if kill_owned(int(pid), cmdline, started=resources.started(pid)):
            removed.append(f"process {pid} ({what})")
    existing = set(list_bridges())
    owned = set(resources.names())
    for br in (b for b in resources.bridges if b in owned):
        if br in existing:
            subprocess.run(["ovs-vsctl", "--timeout=10", "--if-exists", "del-br", br], capture_output=True)
            removed.append(f"bridge {br}")
        if interface_exists(br):
            subprocess.run(["ip", "link", "del", br], capture_output=True)
    for intf in (i for i in resources.interfaces if i in owned):
        if interface_exists(intf):
            subprocess.run(["ip", "link", "del", intf], capture_output=True)
            removed.append(f"interface {intf}")
    for path in resources.sockets:
        if _is_socket(path):
            os.unlink(path)
            removed.append(f"socket {path}")
    return removed


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except OSError:
        return False


def private_socket_dir() -> str:
    """The root-only folder for the runs' controller sockets (see SOCKET_ROOT)."""
    os.makedirs(SOCKET_ROOT, mode=0o700, exist_ok=True)
    os.chmod(SOCKET_ROOT, 0o700)
    return SOCKET_ROOT


def read_record(path: str) -> Resources | None:
    """A run's record (with its identity.json, when there is one), or None when it is unreadable (then
    the run directory is left alone)."""
    try:
        with open(path) as f:
            data = json.load(f)
        identity = os.path.join(os.path.dirname(path), "identity.json")
        if isinstance(data, dict) and os.path.exists(identity):
            with open(identity) as f:
                extra = json.load(f)
            data = {**extra, **data} if isinstance(extra, dict) else data
        return Resources.from_json(data)
    except (OSError, ValueError, TypeError):
        return None


def recorded_runs() -> list[tuple[str, Resources, bool]]:
    """Every run directory with its record and whether its owner still runs (a live run is not stale)."""
    runs = []
    if not os.path.isdir(RUN_ROOT):
        return runs
    for name in sorted(os.listdir(RUN_ROOT)):
        record = os.path.join(RUN_ROOT, name, "resources.json")
        if name.startswith("run-") and os.path.isfile(record):
            resources = read_record(record)
            if resources is not None:
                runs.append((name, resources, resources.owner_alive()))
    return runs


def clean_stale_runs() -> list[str]:
    """Remove what crashed runs left behind (the caller holds the machine lock). A run whose owner is
    alive is someone else's: skip it."""
    report = []
    if not os.path.isdir(RUN_ROOT):
        return report
    for name in sorted(os.listdir(RUN_ROOT)):
        path = os.path.join(RUN_ROOT, name)
        record = os.path.join(path, "resources.json")
        if not name.startswith("run-") or not os.path.isfile(record):
            continue
        resources = read_record(record)
        if resources is None:
            report.append(f"{name}: unreadable record, left alone (remove {path} yourself if it is stale)")
            continue
        if resources.owner_alive():
            report.append(f"{name}: still running (pid {resources.owner_pid}), left alone")
            continue
        removed = remove_recorded(resources)
        if restored := restore_rcu(path):  # the run died while its bridges went (lab.emulation.rcu)
            removed.append(restored)
        left = still_present(resources)
        foreign = resources.foreign_names()
        if foreign:
            report.append(f"{name}: left alone {', '.join(foreign)}: not named with the run's tag "
                          f"{resources.tag!r}, so not its own")
        if left:
            report.append(f"{name}: removed {', '.join(removed) or 'nothing'}; could not remove {', '.join(left)}")
            continue
        shutil.rmtree(path, ignore_errors=True)
        report.append(f"{name}: removed {', '.join(removed) if removed else 'its run directory'}")
    return report + _orphaned_sockets()


def _orphaned_sockets() -> list[str]:
    """A run's controller socket whose run directory is gone (removed by a version of the lab that did
    not know sockets): named after the run, so it is the run's, and nobody else's."""
    report = []
    if os.path.isdir(SOCKET_ROOT):
        for entry in sorted(os.listdir(SOCKET_ROOT)):
            path = os.path.join(SOCKET_ROOT, entry)
            run = entry.removesuffix(".sock")
            if entry.startswith("run-") and entry.endswith(".sock") and _is_socket(path) \
                    and not os.path.exists(os.path.join(RUN_ROOT, run)):
                os.unlink(path)
                report.append(f"{run}: removed socket {path}")
    return report


def still_present(resources: Resources) -> list[str]:
    """What of a record still exists after removal: an honest teardown reports it instead of success."""
    left = [f"process {pid} ({what})" for pid, (what, cmdline, *_) in resources.processes.items()
            if _same_process(int(pid), cmdline, resources.started(pid))]
    left += [f"interface {n}" for n in resources.names() if interface_exists(n)]
    left += [f"socket {p}" for p in resources.sockets if _is_socket(p)]
    return left


def unowned_resources(prefix: str = "npl-") -> list[str]:
    """Bridges and root-namespace interfaces with the lab's prefix, and run directories, that no live
    run owns: what a run that claims to have torn down must not leave (other live runs are not leftovers)."""
    live = [(name, res) for name, res, alive in recorded_runs() if alive]
    owned = {n for _, res in live for n in res.bridges + res.interfaces}
    left = [f"interface {n}" for n in sorted(list_interfaces()) if n.startswith(prefix) and n not in owned]
    left += [f"bridge {b}" for b in list_bridges() if b.startswith(prefix) and b not in owned]
    if os.path.isdir(RUN_ROOT):
        live_dirs = {name for name, _ in live}
        left += [f"run dir {d}" for d in sorted(os.listdir(RUN_ROOT)) if d.startswith("run-") and d not in live_dirs]
    return left
