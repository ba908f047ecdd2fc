"""The bench's pure parts: statistics, goals and the table, configuration, the clusters it builds, and
the arithmetic that turns timestamps and tool output into figures (no network, no root)."""

from __future__ import annotations

import pytest

from bench.__main__ import config_from, parser
from bench.clusters import (
    DATAPATH_PATHS,
    ENDPOINTS_PER_SERVICE,
    control_plane_cluster,
    control_plane_services,
    datapath_cluster,
    datapath_services,
    datapath_target,
    expected_counts,
    flip_service,
    scale_cluster,
    scale_targets,
    set_flip,
)
from bench.config import BENCHMARKS, Config, parse_sizes, quick, select
from bench.datapath import parse_iperf
from bench.machine import others
from bench.report import BenchResult, Figure, Goal, busy_warning, format_value, render_table
from bench.stats import median, paired_ratios, percentile, ratio, rotate, sandwich, sandwich_ratios, spread
from bench.time_to_result import phases
from controllers.pipeline import compile_state
from lab.emulation.proxy_state import build_proxy_state
from lab.kube import addressing as addr
from lab.kube.endpoints import endpoints, workload_ports

# --- statistics ---------------------------------------------------------------------------------------


def test_median_ignores_missing_runs_and_is_none_without_any():
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None, None]) is None


def test_percentile_is_nearest_rank_a_value_that_was_measured():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([5.0, 1.0], 99) == 5.0
    assert percentile([], 50) is None


def test_ratios_pair_the_runs_and_refuse_unpaired_sides():
    assert paired_ratios([0.9, 1.8], [1.0, 2.0]) == [0.9, 0.9]
    assert paired_ratios([1.0, None], [0.0, 1.0]) == [None, None]
    assert ratio(1.0, None) is None
    with pytest.raises(ValueError):
        paired_ratios([1.0], [1.0, 2.0])


def test_rotate_starts_each_run_at_another_item():
    assert rotate("abcd", 0) == list("abcd")
    assert rotate("abcd", 1) == list("bcda")
    assert rotate("abcd", 5) == list("bcda")
    assert rotate([], 3) == []
    assert spread([2.0, None, 1.0]) == (1.0, 2.0)


# --- figures, goals, table ----------------------------------------------------------------------------


def test_goal_is_met_by_the_median_on_the_right_side():
    at_most, at_least = Goal("<=", 15.0), Goal(">=", 0.9)
    assert at_most.met(15.0) and not at_most.met(15.1)
    assert at_least.met(0.95) and not at_least.met(0.89)
    assert at_most.met(None) is None
    with pytest.raises(ValueError):
        Goal("<", 1.0)
    fig = Figure("x", "s", [20.0, 10.0, 12.0], at_most)
    assert fig.value == 12.0 and fig.met is True
    data = fig.to_dict()
    assert (data["median"], data["min"], data["max"], data["runs"]) == (12.0, 10.0, 20.0, 3)
    assert data["goal"] == {"op": "<=", "value": 15.0}


def test_values_are_printed_with_about_three_significant_figures():
    assert [format_value(v) for v in (None, 0, 0.01234, 0.5, 9.83, 12.34, 1234.5)] == \
        ["-", "0.00", "0.0123", "0.50", "9.83", "12.3", "1,234"]


def test_table_shows_goal_and_verdict_beside_each_figure_and_names_failed_benchmarks():
    ok = BenchResult(figures=[Figure("end to end", "s", [9.8, 9.5, 10.1], Goal("<=", 15.0)),
                              Figure("  startup", "s", [0.4])])
    broken = BenchResult(error="LabError: boom")
    table = render_table({"time-to-result": ok.to_dict(), "scale": broken.to_dict()})
    lines = table.splitlines()
    assert lines[0].split() == ["benchmark", "figure", "median", "min-max", "runs", "goal", "met"]
    row = next(line for line in lines if "end to end" in line)
    assert "9.80 s" in row and "9.50-10.1" in row and "<= 15.0 s" in row and row.rstrip().endswith("yes")
    assert any("FAILED: LabError: boom" in line for line in lines)


def test_busy_warning_only_when_others_used_a_quarter_core():
    assert busy_warning(0.1, 2) is None
    assert "busy" in busy_warning(0.8, 2)
    assert busy_warning(None, 2) is None


# --- configuration ------------------------------------------------------------------------------------


def test_only_accepts_unique_prefixes_and_keeps_the_canonical_order():
    assert select(None) == BENCHMARKS
    assert select(["scale", "time"]) == ("time-to-result", "scale")
    with pytest.raises(ValueError):
        select(["nope"])
    assert parse_sizes("5, 10,20") == (5, 10, 20)
    assert parse_sizes("0,100", minimum=0) == (0, 100)
    with pytest.raises(ValueError):
        parse_sizes("5,x")
    with pytest.raises(ValueError):
        parse_sizes("0")


def test_quick_is_one_run_of_small_sizes_and_options_override():
    q = quick(Config())
    assert q.runs == 1 and max(q.scale_nodes) <= 10 and max(q.cp_services) <= 100
    cfg = config_from(parser().parse_args(["--quick", "--runs", "2", "--only", "data"]))
    assert cfg.runs == 2 and cfg.only == ("datapath",) and cfg.iperf_seconds == q.iperf_seconds
    assert Config(runs=3, heavy_runs=1).runs_for(heavy=True) == 1
    assert Config(runs=3, heavy_runs=1).runs_for(heavy=False) == 3
    with pytest.raises(ValueError):
        config_from(parser().parse_args(["--runs", "0"]))


# --- clusters -----------------------------------------------------------------------------------------


def test_datapath_services_have_the_one_pod_on_a_backend_port_of_their_own_per_run():
    cluster = datapath_cluster()
    cluster.services = datapath_services(runs=3)
    backend_ports, node_ports = [], []
    for service in cluster.services:
        for sp in service.ports:
            eps = endpoints(cluster, service, sp)
            assert [e.pod for e in eps] == ["bench-pod"]
            backend_ports.append(eps[0].port)
            node_ports.append(sp.node_port)
    routed = DATAPATH_PATHS[0]
    backend_ports += [routed.iperf_port] + [datapath_target(cluster, routed, "conn", run)[1] for run in range(3)]
    # iperf once per path, connection rates once per path and run: no two measurements share a 4-tuple.
    assert len(backend_ports) == len(set(backend_ports)) == 4 * len(DATAPATH_PATHS)
    assert len(node_ports) == len(set(node_ports)) == 4 * (len(DATAPATH_PATHS) - 1)
    assert datapath_target(cluster, routed, "iperf") == (cluster.pod("bench-pod").ip, routed.iperf_port)
    remote = DATAPATH_PATHS[-1]
    assert datapath_target(cluster, remote, "conn") == (addr.node_ip(2), remote.conn_node_port)
    assert datapath_target(cluster, remote, "conn", 2) == (addr.node_ip(2), remote.conn_node_port + 200)
    assert cluster.pod("bench-pod").node == "node-a" and remote.entry_node == "node-b"


def test_benchmark_servers_ports_stay_free_when_services_come_after_start():
    cluster = datapath_cluster()
    assert workload_ports(cluster, cluster.pods[0]) == [8080]  # what the lab serves at start


def test_control_plane_services_have_ten_distinct_endpoints_each_one_per_node():
    cluster = control_plane_cluster()
    cluster.services = control_plane_services(25)
    seen = set()
    for service in cluster.services:
        eps = endpoints(cluster, service, service.ports[0])
        assert len(eps) == ENDPOINTS_PER_SERVICE
        assert len({e.node for e in eps}) == ENDPOINTS_PER_SERVICE
        seen.update((e.ip, e.port) for e in eps)
    assert len(seen) == 25 * ENDPOINTS_PER_SERVICE
    flows, groups = expected_counts(compile_state(build_proxy_state(cluster, 1)))
    assert groups == 25 * len(cluster.nodes)  # one select group per Service per node (Cluster policy)
    # Per node: four flows per NodePort Service (its clusterIP from pods and from elsewhere, nodeIP:nodePort,
    # 127.0.0.1:nodePort), one hairpin flow per endpoint address (pods, not ports); the endpoints' DNATs
    # live in the group buckets, so flows do not grow with endpoints x Services.
    empty = control_plane_cluster()
    empty_flows, _ = expected_counts(compile_state(build_proxy_state(empty, 1)))
    addresses = {ip for ip, _ in seen}
    assert flows == empty_flows + len(cluster.nodes) * (4 * 25 + len(addresses))


def test_control_plane_needs_ten_nodes_for_ten_endpoints_one_per_node():
    with pytest.raises(ValueError):
        control_plane_cluster(nodes=5)


def test_flip_moves_the_single_endpoint_between_two_pods():
    cluster = control_plane_cluster()
    flip = flip_service()
    cluster.services = [flip]
    set_flip(cluster, "p-1-0", "p-2-0")
    assert [e.pod for e in endpoints(cluster, flip, flip.ports[0])] == ["p-1-0"]
    set_flip(cluster, "p-2-0", "p-1-0")
    assert [e.pod for e in endpoints(cluster, flip, flip.ports[0])] == ["p-2-0"]


def test_scale_targets_name_exactly_one_pod_each_and_cover_every_pod():
    cluster = scale_cluster(4, 3)
    targets = scale_targets(cluster)
    assert len(targets) == 12 and sorted(targets.values()) == sorted(p.name for p in cluster.pods)
    assert targets[f"{addr.node_ip(2)}:30001"] == "p-2-1"
    assert all(s.external_traffic_policy == "Local" for s in cluster.services)


# --- from measurements to figures ---------------------------------------------------------------------


def test_time_to_result_phases_exclude_the_lock_wait_from_the_total():
    marks = {"t0": 100.0, "startBegin": 100.5, "startEnd": 111.6, "lockWaitS": 10.0,
             "timings": {"controller": 0.2, "network": 0.3, "flows": 0.05, "servers": 0.05},
             "calls": {"counterRead": {"n": 12, "s": 5.0}, "probe": {"n": 6, "s": 2.5},
                       "publish": {"n": 2, "s": 0.1}},
             "stopBegin": 120.0, "stopEnd": 120.5}
    split = phases(marks, exit_at=120.7)
    assert split["total"] == pytest.approx(10.7)
    assert split["startup"] == pytest.approx(0.5)
    assert split["build"] == pytest.approx(0.6)
    assert split["checks"] == pytest.approx(0.5)
    assert split["experiment"] == pytest.approx(8.4)
    assert split["experimentOther"] == pytest.approx(0.8)
    assert split["teardown"] == pytest.approx(0.5) and split["reportAndExit"] == pytest.approx(0.2)


def test_iperf_json_gives_receiver_throughput_and_all_bytes_moved():
    doc = {"intervals": [{"sum": {"bytes": 100, "omitted": True}}, {"sum": {"bytes": 300}}],
           "end": {"sum_received": {"bits_per_second": 8e8}, "sum_sent": {"retransmits": 7},
                   "cpu_utilization_percent": {"host_total": 10.0, "remote_total": 20.0}}}
    out = parse_iperf(doc)
    assert out["bitsPerSecond"] == 8e8 and out["retransmits"] == 7 and out["bytesMoved"] == 400
    with pytest.raises(Exception, match="unable to connect"):
        parse_iperf({"error": "unable to connect to server"})


def test_other_work_is_what_runs_outside_our_process_tree_the_kernel_and_open_vswitch():
    table = {  # pid: (parent, command, cpu)
        1: (0, "systemd", 5.0), 2: (0, "kthreadd", 0.0), 14: (2, "ksoftirqd/0", 3.0),
        100: (1, "bash", 1.0), 101: (100, "python", 7.0),  # the bench (101) and a child of it
        102: (101, "controllers", 2.0), 103: (102, "sh", 0.5),
        200: (1, "ovs-vswitchd", 40.0), 300: (1, "pytest", 9.0), 301: (300, "python", 4.0),
    }
    assert others(table, me=101) == {1: 5.0, 100: 1.0, 300: 9.0, 301: 4.0}


def test_sandwich_puts_every_path_between_two_baselines_and_divides_by_their_mean():
    assert sandwich("r", ["a", "b"]) == ["r", "a", "r", "b", "r"]
    measured = [("r", 100.0), ("a", 90.0), ("r", 80.0), ("b", 40.0), ("r", None)]
    ratios = sandwich_ratios(measured, "r")
    assert ratios["a"] == pytest.approx(1.0)  # 90 over (100 + 80) / 2
    assert ratios["b"] == pytest.approx(0.5)  # the missing baseline after it is left out
    assert sandwich_ratios([("a", 1.0)], "r") == {"a": None}


def test_the_machine_line_names_how_fast_python_ran():
    from bench.machine import python_speed
    from bench.report import render_machine

    speed = python_speed(n=200_000)
    assert 0 < speed < 60  # seconds per 10^7 additions: a fraction of a second to a few seconds
    line = render_machine({"cores": 2, "pythonLoopS": speed, "loadAverage": {"start": 0.1, "end": 0.2}})
    assert line.endswith(f", Python {speed} s per 10^7 additions")
    assert "Python" not in render_machine({"cores": 2})


def test_an_install_is_split_by_the_controllers_moments_and_the_switch_busy_share_follows():
    from bench.control_plane import install_split, split_figures

    change = {"startedAt": 100.7, "readAt": 101.0, "firstSentAt": 102.2}
    split = install_split(100.0, 0.5, 5.7, change)
    assert split == {"labS": 0.7, "labBuildS": 0.5, "controllerReadS": 0.3, "firstBridgeS": 1.2,
                     "afterFirstBridgeS": 3.5}
    assert install_split(100.0, 0.5, 5.7, {"applyMs": 3.0}) == {}  # an older controller: no split
    figures = split_figures(10000, [{**split, "ovsCpuS": 3.43}, {"installS": 6.0}])
    assert [f.value for f in figures] == [0.7, 0.3, 1.2, 3.5, 0.98]
    assert split_figures(10000, [{"installS": 6.0}]) == []
