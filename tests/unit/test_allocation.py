"""lab.kube.allocation: kube-apiserver's nodePort allocator (KEP-3668 bands), made deterministic."""

from __future__ import annotations

import pytest

from lab.kube.allocation import (
    PortConflict,
    PortRequest,
    allocate,
    band_offset,
    next_free,
    static_band,
)

TINY = (100, 163)  # 64 ports: static band of 16 (100-115), dynamic band 116-163


def test_band_offset_follows_kep_3668():
    assert band_offset(2768) == 86  # the default range 30000-32767
    assert static_band() == (30000, 30085)
    assert band_offset(64) == 16
    assert band_offset(100_000) == 128
    assert band_offset(16) == 0 and static_band((1, 16)) is None


def test_explicit_ports_are_kept_and_omitted_ones_come_from_the_upper_band():
    ports = allocate([PortRequest("default/a:", 30007), PortRequest("default/b:"), PortRequest("default/c:")])
    assert ports["default/a:"] == 30007
    assert all(30086 <= ports[key] <= 32767 for key in ("default/b:", "default/c:"))
    assert ports["default/b:"] != ports["default/c:"]


def test_allocation_is_deterministic_and_depends_on_the_key():
    requests = [PortRequest(f"default/svc{i}:http") for i in range(20)]
    assert allocate(requests) == allocate(requests)
    assert next_free(set(), "default/a:http") != next_free(set(), "default/b:http")


def test_explicit_ports_are_reserved_before_dynamic_allocation():
    wanted = next_free(set(), "default/a:")
    ports = allocate([PortRequest("default/a:"), PortRequest("default/b:", wanted)])
    assert ports["default/b:"] == wanted
    assert ports["default/a:"] != wanted


def test_scan_wraps_around_within_the_upper_band():
    start = next_free(set(), "default/a:", TINY)
    used = set(range(start, 164))  # from the start to the end of the range
    assert next_free(used, "default/a:", TINY) == 116  # first port of the upper band, not the lower band


def test_upper_band_is_used_up_before_the_lower_band():
    requests = [PortRequest(f"default/s{i}:") for i in range(64)]
    ports = allocate(requests, TINY)
    in_order = [ports[request.key] for request in requests]
    assert sorted(in_order[:48]) == list(range(116, 164))
    assert sorted(in_order[48:]) == list(range(100, 116))


def test_exhausted_range():
    requests = [PortRequest(f"default/s{i}:") for i in range(65)]
    with pytest.raises(PortConflict) as caught:
        allocate(requests, TINY)
    assert caught.value.request.key == "default/s64:"
    assert "all 64 ports of 100-163 are in use" in caught.value.problem


def test_tiny_ranges_have_no_static_band():
    ports = allocate([PortRequest(f"k{i}") for i in range(16)], (1000, 1015))
    assert sorted(ports.values()) == list(range(1000, 1016))


def test_explicit_port_outside_the_range():
    with pytest.raises(PortConflict) as caught:
        allocate([PortRequest("default/a:", 40000)])
    assert caught.value.problem == "40000 is outside 30000-32767"
    assert caught.value.fix == "pick a port in the range or omit it to have one allocated"


def test_explicit_port_used_twice_names_the_holder():
    first, second = PortRequest("default/a:", 30007), PortRequest("default/b:", 30007)
    with pytest.raises(PortConflict) as caught:
        allocate([first, second])
    assert (caught.value.request, caught.value.holder, caught.value.port) == (second, first, 30007)


def test_keys_must_be_unique():
    with pytest.raises(ValueError):
        allocate([PortRequest("k"), PortRequest("k")])
