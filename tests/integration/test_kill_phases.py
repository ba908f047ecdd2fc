"""SIGKILL at any phase of a run leaves only what ``python -m lab clean`` removes, and ``lab clean``
leaves the machine exactly as it was before the run: a decoy bridge, veth link, network namespace and
process with names like the lab's survive. Also: ``lab clean`` never touches a live run, an old record
with fields this version does not know is tolerated, and NPL_LOCK_WAIT=abc is one line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lab.emulation.resources import RUN_ROOT, MachineLock, RunDir, read_record, recorded_runs, tags_in_use
from lab.kube.addressing import choose_tag
from lab.polling import wait_for

REPO = Path(__file__).resolve().parents[2]
SEED = str(REPO / "examples" / "seed")
PHASES = ["starting kube-proxy", "building the network", "starting the pods' servers", "cluster up in",
          "tearing down"]
# Decoys named like the lab's, and per test process (another copy of this test may run beside it).
DECOY_BRIDGE, DECOY_LINK, DECOY_NETNS = f"nplx-n{os.getpid()}", f"nplx-p{os.getpid()}", f"npl-decoy-{os.getpid()}"
OTHERS_DECOYS = ("nplx-", "npl-decoy-")
DECOY_CMD = "python -m controllers --socket /run/nodeport-lab/run-1-1/openflow.sock"


def lab_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "lab", *args]


def _live_owned() -> set[str]:
    return {n for _, res, alive in recorded_runs() if alive for n in res.bridges + res.interfaces}


def machine() -> dict[str, set[str]]:
    """What a lab run could leave: interfaces, bridges, named namespaces, run dirs, orphaned Mininet shells."""
    bridges = subprocess.run(["ovs-vsctl", "--timeout=5", "list-br"], capture_output=True, text=True).stdout.split()
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split("\n")
    runs = set(os.listdir(RUN_ROOT)) - {"lock"} if os.path.isdir(RUN_ROOT) else set()
    return {"interfaces": set(os.listdir("/sys/class/net")), "bridges": set(bridges),
            "netns": {line.split()[0] for line in netns if line.strip()}, "runs": runs,
            "orphan shells": set(_orphaned_mininet_shells()),
            "live": _live_owned() | {name for name, _, alive in recorded_runs() if alive}}


def _orphaned_mininet_shells() -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == 1 and "mininet:" in cmd:
            found.append(f"{entry} {cmd.strip()}")
    return found


def differences(before: dict, after: dict) -> dict:
    """What changed, leaving out what belongs to runs that are alive (other users of the machine)."""
    live = before["live"] | after["live"]
    changed = {k: {n for n in (before[k] ^ after[k]) - live if not n.startswith(OTHERS_DECOYS)} for k in before
               if k != "live"}
    return {k: sorted(v) for k, v in changed.items() if v}


@pytest.fixture(scope="module")
def decoys():
    subprocess.run(["ovs-vsctl", "--may-exist", "add-br", DECOY_BRIDGE, "--", "set", "bridge", DECOY_BRIDGE,
                    "datapath_type=netdev"], check=True)
    subprocess.run(["ip", "link", "add", DECOY_LINK, "type", "veth", "peer", "name", DECOY_LINK + "b"], check=True)
    subprocess.run(["ip", "netns", "add", DECOY_NETNS], check=True)
    proc = subprocess.Popen(["bash", "-c", f"exec -a '{DECOY_CMD}' sleep 600"], start_new_session=True)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()
        subprocess.run(["ip", "netns", "del", DECOY_NETNS], check=False)
        subprocess.run(["ip", "link", "del", DECOY_LINK], check=False)
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", DECOY_BRIDGE], check=False)


def _run_processes_alive(run_dir: str) -> list[str]:
    """Processes whose command line names the run's directory (controller, pod servers, checker)."""
    alive = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if run_dir in cmd:
            alive.append(f"{entry} {cmd[:80]}")
    return alive


@pytest.mark.parametrize("phase", PHASES)
def test_sigkill_at_any_phase_then_clean_restores_the_machine(decoys, phase):
    before = machine()
    proc = subprocess.Popen(lab_cmd("apply", "-f", SEED, "--requests", "1"), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line.strip())
        if phase in line:
            proc.kill()
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before {phase!r}: {seen}"
    runs = [d for d in os.listdir(RUN_ROOT) if d.startswith(f"run-{proc.pid}-")]
    done = subprocess.run(lab_cmd("clean"), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for run in runs:
        wait_for(lambda run=run: not _run_processes_alive(os.path.join(RUN_ROOT, run)), timeout=5,
                 what="the killed run's processes to be gone",
                 last=lambda run=run: _run_processes_alive(os.path.join(RUN_ROOT, run)))
    wait_for(lambda: not differences(before, machine()), timeout=5, what="the machine as it was",
             last=lambda: differences(before, machine()))
    assert decoys.poll() is None, "the decoy process was killed"
    after = machine()
    assert DECOY_BRIDGE in after["bridges"] and DECOY_LINK in after["interfaces"] and DECOY_NETNS in after["netns"]


def test_clean_leaves_a_live_run_alone_and_tolerates_unknown_fields(tmp_path):
    """A record of a live owner (this test process) is not stale, whatever the pid/age; a record with an
    unknown field from a newer or older lab is read, not a traceback."""
    os.makedirs(RUN_ROOT, mode=0o700, exist_ok=True)
    live = Path(RUN_ROOT) / f"run-{os.getpid()}-1"
    live.mkdir()
    from lab.emulation.resources import start_time
    (live / "resources.json").write_text(json.dumps({
        "owner_pid": os.getpid(), "owner_start": start_time(os.getpid()), "bridges": ["npl-zz9"],
        "interfaces": [], "processes": {}, "from_the_future": {"x": 1}}))
    try:
        assert read_record(str(live / "resources.json")).owner_pid == os.getpid()
        done = subprocess.run(lab_cmd("clean"), cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert f"{live.name}: still running" in done.stdout and live.exists()
    finally:
        subprocess.run(["rm", "-rf", str(live)], check=False)


def _veth_pairs(names: list[str]) -> None:
    """Root-namespace interfaces named like a run's, two by two (a veth pair, as the lab's links are)."""
    for one, other in zip(names[::2], names[1::2], strict=True):
        subprocess.run(["ip", "link", "add", one, "type", "veth", "peer", "name", other], check=True)


def test_two_runs_leftovers_are_never_confused():
    """Run A died; run B (this test process) lives; names of a third tag belong to no record.
    A's record also lists one of B's interfaces (damaged, or edited by hand). ``lab clean`` removes A's
    names and nothing else: B's and the strangers survive, and it says why it left B's alone."""
    lock = MachineLock()
    lock.acquire()  # no run chooses a tag while these are chosen and made
    try:
        taken = tags_in_use()
        tag_a = choose_tag(taken)
        tag_b = choose_tag(taken | {tag_a})
        tag_c = choose_tag(taken | {tag_a, tag_b})
        a_names, b_names, strangers = ([f"npl-{tag}-p1", f"npl-{tag}-ul-c"] for tag in (tag_a, tag_b, tag_c))
        _veth_pairs(a_names + b_names + strangers)
    finally:
        lock.release()
    dead = subprocess.Popen(["true"])
    dead.wait()
    run_a = RunDir(os.path.join(RUN_ROOT, f"run-{dead.pid}-1"), tag_a)
    run_b = RunDir(os.path.join(RUN_ROOT, f"run-{os.getpid()}-{tag_b}"), tag_b)
    try:
        for run, names in ((run_a, a_names + b_names), (run_b, b_names)):
            os.mkdir(run.path, 0o700)
            run.own_interfaces(names)
        run_a.resources.owner_pid, run_a.resources.owner_start = dead.pid, 1
        run_a.save()
        done = subprocess.run(lab_cmd("clean"), cwd=REPO, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        present = set(os.listdir("/sys/class/net"))
        assert not present & set(a_names), done.stdout
        assert set(b_names) | set(strangers) <= present, done.stdout
        assert f"left alone {', '.join(b_names)}: not named with the run's tag '{tag_a}'" in done.stdout
        assert not os.path.exists(run_a.path) and os.path.exists(run_b.path)
    finally:
        for name in a_names + b_names + strangers:
            subprocess.run(["ip", "link", "del", name], capture_output=True)
        subprocess.run(["rm", "-rf", run_a.path, run_b.path], check=False)


def test_a_bad_lock_wait_is_one_line():
    env = dict(os.environ, NPL_LOCK_WAIT="abc")
    done = subprocess.run(lab_cmd("clean"), cwd=REPO, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "NPL_LOCK_WAIT='abc' is not a number of seconds" in lines[0]
