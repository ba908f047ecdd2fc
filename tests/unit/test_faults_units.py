"""The pieces behind faults and interrupts, without a network: the signal guard, the gate a process
starts behind, records of other versions, NPL_LOCK_WAIT, the supervisor, and how a stream converged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from lab.emulation import resources
from lab.emulation.interrupts import InterruptGuard
from lab.emulation.resources import GATE, Resources, lock_wait_s, process_alive, start_time
from lab.emulation.supervisor import Daemon, Supervisor
from lab.errors import LabError
from lab.scenarios.faults import stream_result


def test_first_signal_interrupts_later_ones_wait_for_the_teardown(capsys):
    guard = InterruptGuard()
    guard.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGINT)  # during the teardown: noted, not raised
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.05)
    finally:
        guard.restore()  # the teardown was already an interrupted one: nothing more to raise
    err = capsys.readouterr().err
    assert err.count("received during teardown") == 1 and "finishing the teardown first" in err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_signal_during_a_normal_teardown_is_raised_once_it_is_done():
    guard = InterruptGuard()
    guard.install()
    guard.begin_teardown()
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.05)
    with pytest.raises(KeyboardInterrupt):
        guard.restore()


def test_the_gate_never_runs_a_program_its_lab_did_not_record(tmp_path):
    """The lab died between starting the gate and recording the pid: the gate reads EOF and exits."""
    marker = tmp_path / "ran"
    read, write = os.pipe()
    proc = subprocess.Popen(["sh", "-c", GATE, "npl-gate", "touch", str(marker)], stdin=read)
    os.close(read)
    os.close(write)  # no "go"
    assert proc.wait(timeout=5) != 0 and not marker.exists()


def test_start_process_records_pid_start_time_and_final_command_line(tmp_path, monkeypatch):
    monkeypatch.setattr(resources, "RUN_ROOT", str(tmp_path))
    run = resources.RunDir.create()
    proc = resources.start_process(run, ["sleep", "30"], run.file("log"), "sleeper")
    try:
        what, cmdline = run.resources.processes[str(proc.pid)]
        assert (what, cmdline) == ("sleeper", "sleep 30")
        assert run.resources.starts[str(proc.pid)] == start_time(proc.pid)
        assert os.getpgid(proc.pid) == proc.pid  # its own group, killed as one
        record = resources.read_record(run.file("resources.json"))
        assert record.owner_alive() and record.started(str(proc.pid)) == start_time(proc.pid)
    finally:
        resources.stop_process(run, proc)
    assert not process_alive(proc.pid, run.resources.starts.get(str(proc.pid)) or 1)


def test_records_of_other_versions_are_read():
    old = Resources.from_json({"owner_pid": 1, "bridges": ["npl-n1"], "interfaces": [], "processes": {}})
    assert old.owner_start is None and old.bridges == ["npl-n1"]
    newer = Resources.from_json({"owner_pid": 2, "bridges": [], "a_field_from_the_future": [1]})
    assert newer.owner_pid == 2
    for bad in ([], {"bridges": []}, {"owner_pid": "1"}):
        with pytest.raises(ValueError):
            Resources.from_json(bad)


@pytest.mark.parametrize("text", ["abc", "-1", "inf", "nan", "1e400", "5 s"])
def test_a_bad_lock_wait_is_refused_in_one_line(monkeypatch, text):
    monkeypatch.setenv("NPL_LOCK_WAIT", text)
    with pytest.raises(LabError, match="is not a number of seconds"):
        lock_wait_s()


def test_a_good_lock_wait_is_read(monkeypatch):
    monkeypatch.setenv("NPL_LOCK_WAIT", " 2.5 ")
    assert lock_wait_s() == 2.5


def test_the_supervisor_notices_a_death_within_a_second_and_restarts():
    import threading
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])]
    lines: list[str] = []
    sup = Supervisor(lines.append, threading.RLock())
    sup.watch(Daemon("sleeper", lambda: procs[-1], lambda: procs.append(subprocess.Popen(["sleep", "60"])),
                     lambda proc: None))
    sup.start()
    try:
        killed = time.time()
        procs[0].kill()
        deadline = time.monotonic() + 5
        while not (sup.restarts and sup.restarts[0]["restartedInS"] is not None) and time.monotonic() < deadline:
            time.sleep(0.02)
        event = sup.restarts[0]
        assert event["how"] == "killed by SIGKILL" and event["noticedAt"] - killed < 1.0
        assert len(procs) == 2 and procs[1].poll() is None
        assert any("restarting it" in line for line in lines)
    finally:
        sup.stop()
        for p in procs:
            p.kill()
            p.wait()


def _probe(oks: list[bool], start: float = 1000.0) -> dict:
    from datetime import UTC, datetime
    return {"startedAt": datetime.fromtimestamp(start, UTC).isoformat(),
            "records": [{"ok": ok, "t": i * 0.1, "error": None if ok else "timeout"} for i, ok in enumerate(oks)]}


def test_convergence_is_the_first_request_of_the_last_unbroken_run_of_served_ones():
    result = stream_result(_probe([True, True, False, True, False, False, True, True]), injected=1000.1)
    assert result["failed"] == 3 and result["convergedAfterS"] == 0.5 and result["errors"] == {"timeout": 3}
    assert stream_result(_probe([True] * 4), 1000.0)["convergedAfterS"] == 0.0
    assert stream_result(_probe([True, False]), 1000.0)["convergedAfterS"] is None
    assert stream_result({"error": "probe died"}, 0)["failed"] is None
