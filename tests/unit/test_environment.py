"""The one-sentence diagnoses a user gets before anything is built (no root needed to test them)."""

from __future__ import annotations

import subprocess

import pytest

from lab.emulation import environment
from lab.errors import LabError


def test_not_root_is_told_to_use_sudo(monkeypatch):
    monkeypatch.setattr(environment.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError, match="must run as root: use sudo"):
        environment.preflight()


def test_missing_open_vswitch_names_the_tool_and_the_fix(monkeypatch):
    monkeypatch.setattr(environment.os, "geteuid", lambda: 0)
    monkeypatch.setattr(environment.shutil, "which", lambda tool: None if tool == "ovs-vsctl" else "/usr/bin/x")
    with pytest.raises(LabError, match=r"ovs-vsctl is missing: run \./setup\.sh"):
        environment.preflight()


def test_open_vswitch_not_running_says_how_to_start_it(monkeypatch):
    monkeypatch.setattr(environment.os, "geteuid", lambda: 0)
    monkeypatch.setattr(environment.shutil, "which", lambda tool: "/usr/bin/x")
    monkeypatch.setattr(environment.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 1, "", "database connection failed"))
    with pytest.raises(LabError, match="Open vSwitch is not running: start it with"):
        environment.preflight()


def test_every_diagnosis_is_one_line(monkeypatch):
    monkeypatch.setattr(environment.os, "geteuid", lambda: 1000)
    with pytest.raises(LabError) as info:
        environment.preflight()
    assert "\n" not in str(info.value)
