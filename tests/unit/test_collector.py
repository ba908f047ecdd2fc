"""controllers.collector: the cyclic collector is off during an update and the heap frozen only after a large one."""

from __future__ import annotations

import gc

import pytest

from controllers import collector


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()
    gc.enable()


def test_a_large_update_is_frozen_and_the_collector_restored(unfrozen):
    seen = {}

    def update():
        seen["enabled"] = gc.isenabled()
        return [object() for _ in range(10)]

    gc.enable()
    before = gc.get_freeze_count()
    result, frozen = collector.without_collector(update, lambda r: collector.FREEZE_AT)
    assert frozen and len(result) == 10 and seen["enabled"] is False and gc.isenabled()
    assert gc.get_freeze_count() > before


def test_a_small_update_is_left_to_the_collector(unfrozen):
    gc.enable()
    before = gc.get_freeze_count()
    _, frozen = collector.without_collector(lambda: [], lambda r: collector.FREEZE_AT - 1)
    assert not frozen and gc.get_freeze_count() == before and gc.isenabled()


def test_a_failing_update_restores_the_collector_as_it_was(unfrozen):
    gc.disable()

    def update():
        raise RuntimeError("bad state")

    with pytest.raises(RuntimeError):
        collector.without_collector(update, len)
    assert not gc.isenabled()
    gc.enable()
    with pytest.raises(RuntimeError):
        collector.without_collector(update, len)
    assert gc.isenabled()
