"""What starts fast stays fast: nothing heavy is imported before it is needed (bench/time_to_result.py
times it; these check the cause, so a stray import fails here, not in a noisy benchmark)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("matplotlib", "mininet", "nbformat", "lab.measure.drawing", "lab.measure.bulk", "lab.emulation.iperf3",
         "lab.emulation.network", "os_ken")


def modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys; print('\\n'.join(sys.modules))"],
                         cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_reading_the_command_line_and_refusing_a_manifest_imports_nothing_heavy(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {type: NodePort, ports: "
                   "[{port: 80, nodePort: 40000}]}\n")
    loaded = modules_after(f"import lab.cli\ntry:\n    lab.cli.main(['apply', '-f', {str(bad)!r}])\n"
                           "except SystemExit:\n    pass")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY}, sorted(loaded & set(HEAVY))


def test_the_probe_runs_on_the_standard_library_alone():
    """The lab starts it with ``python -S`` (no site-packages, no .pth files): a third of the start-up."""
    out = subprocess.run([sys.executable, "-S", "-m", "lab.measure.probe", "--targets", "127.0.0.1:9",
                          "--requests", "0"], cwd=REPO, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    assert '"records": []' in out.stdout
