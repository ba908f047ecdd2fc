"""lab.emulation.rcu on a stand-in knob file: set only from 0, put back after, and by lab clean after a crash."""

from __future__ import annotations

from pathlib import Path

from lab.emulation.rcu import SAVED, ExpeditedRcu, restore


def knob(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "rcu_expedited"
    path.write_text(value + "\n")
    return path


def test_expedited_inside_the_block_and_put_back_after(tmp_path: Path) -> None:
    k = knob(tmp_path, "0")
    with ExpeditedRcu(str(tmp_path), str(k)):
        assert k.read_text().strip() == "1"
        assert (tmp_path / SAVED).read_text().strip() == "0"  # saved before it was changed
    assert k.read_text().strip() == "0" and not (tmp_path / SAVED).exists()


def test_a_machine_already_expedited_is_left_alone(tmp_path: Path) -> None:
    k = knob(tmp_path, "1")
    with ExpeditedRcu(str(tmp_path), str(k)):
        assert not (tmp_path / SAVED).exists()
    assert k.read_text().strip() == "1"


def test_no_knob_means_no_change(tmp_path: Path) -> None:
    with ExpeditedRcu(str(tmp_path), str(tmp_path / "absent")):
        pass
    assert not (tmp_path / SAVED).exists() and not (tmp_path / "absent").exists()


def test_clean_puts_back_what_a_crashed_run_replaced(tmp_path: Path) -> None:
    k = knob(tmp_path, "0")
    ExpeditedRcu(str(tmp_path), str(k)).__enter__()  # the run dies inside the block
    assert k.read_text().strip() == "1"
    assert restore(str(tmp_path), str(k)) == f"{k} back to 0"
    assert k.read_text().strip() == "0" and restore(str(tmp_path), str(k)) is None
