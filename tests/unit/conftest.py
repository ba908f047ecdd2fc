"""Unit-test fixtures."""

from __future__ import annotations

import pytest

from lab.kube import addressing

UNIT_TAG = "0ut"  # the run tag names carry in unit tests (a run sets its own: lab.emulation.resources.RunDir)


@pytest.fixture(autouse=True)
def run_tag(monkeypatch):
    """Every unit test sees the same run tag, whatever an earlier test's RunDir set."""
    monkeypatch.setattr(addressing, "run_tag", UNIT_TAG)
    return UNIT_TAG
