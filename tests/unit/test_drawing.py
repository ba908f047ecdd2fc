"""The cluster drawing, from data alone: a small cluster and a probe result made of fake pod answers.

No network: the result is what ``lab.measure.report.entry_result`` makes of the records a probe would return,
with the link bytes and paths ``lab.api.measure_entry`` adds. The pictures are rendered to real PNG
files and checked to exist, to be PNGs, and to hold a drawing rather than a blank canvas.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest

from lab.measure.drawing import (
    Picture,
    cluster_graph,
    draw_cluster,
    draw_entry,
    draw_results,
    human_bytes,
    layout,
    plot_measurements,
    plot_results,
    pod_label,
    request_paths,
    save,
)
from lab.measure.report import entry_result

CLIENT_TTL = 64
TOPOLOGY = {
    "client": {"name": "client", "ip": "203.0.113.10"},
    "nodes": [{"name": "node-a", "ip": "172.18.0.11", "podCIDR": "10.244.1.0/24", "podGateway": "10.244.1.1"},
              {"name": "node-b", "ip": "172.18.0.12", "podCIDR": "10.244.2.0/24", "podGateway": "10.244.2.1"}],
    "pods": [{"name": "web-1", "node": "node-a", "ip": "10.244.1.2"},
             {"name": "web-2", "node": "node-a", "ip": "10.244.1.3"},
             {"name": "web-3", "node": "node-b", "ip": "10.244.2.2"}],
    "loadBalancers": [],
}
POD_NODES = {p["name"]: p["node"] for p in TOPOLOGY["pods"]}


def answered(pod: str, source: str, hops: int) -> dict:
    return {"ok": True, "error": None, "latencyMs": 1.5,
            "response": {"pod": pod, "node": POD_NODES[pod], "source": {"ip": source, "port": 40000},
                         "synTTL": CLIENT_TTL - 1 - hops}}  # the edge router takes one, each node one


def probe_result(policy: str, entry: str, records: list[dict], link_bytes: dict[str, int]) -> dict:
    result = entry_result(records, service="web", namespace="default", policy=policy, node_port=30080,
                          node=entry, node_ip="172.18.0.11", inter_node_bytes=link_bytes.get("node-b", 0),
                          client_ttl=CLIENT_TTL, duration_s=0.5)
    result["linkBytes"] = link_bytes
    result["paths"] = request_paths(result, POD_NODES)
    result["topology"] = TOPOLOGY
    return result


@pytest.fixture
def cluster_entry() -> dict:
    """Cluster policy through node-a: two answers on node-a, one forwarded to node-b, one timeout."""
    records = [answered("web-1", "10.244.1.1", 1), answered("web-2", "10.244.1.1", 1),
               answered("web-3", "172.18.0.11", 2), {"ok": False, "error": "timeout", "latencyMs": None}]
    return probe_result("Cluster", "node-a", records,
                        {"client": 4000, "node-a": 6000, "node-b": 2000, "web-1": 1000, "web-2": 1000, "web-3": 1000})


@pytest.fixture
def local_entry() -> dict:
    """Local policy through node-b: its one pod answers everything, seeing the client."""
    records = [answered("web-3", "203.0.113.10", 1) for _ in range(3)]
    return probe_result("Local", "node-b", records, {"client": 3000, "node-a": 0, "node-b": 3000, "web-3": 3000})


def assert_picture(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG"
    assert len(data) > 10_000, f"suspiciously small picture ({len(data)} bytes)"
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels[..., :3].std() > 0.05, "the picture is blank"


def test_the_drawing_of_one_probe_is_written_as_a_png(tmp_path, cluster_entry):
    path = save(draw_entry(cluster_entry), tmp_path / "entry.png")
    assert_picture(path)


def test_the_cluster_alone_and_a_grid_of_probes_are_pictures_too(tmp_path, cluster_entry, local_entry):
    assert_picture(save(draw_cluster(TOPOLOGY), tmp_path / "cluster.png"))
    plot_results([cluster_entry, local_entry], tmp_path / "grid.png")  # what --plot FILE calls
    assert_picture(tmp_path / "grid.png")
    assert_picture(save(plot_measurements([cluster_entry, local_entry]), tmp_path / "measurements.png"))


def test_a_plain_report_row_is_drawn_with_the_topology_given(tmp_path, local_entry):
    row = {k: v for k, v in local_entry.items() if k not in ("linkBytes", "paths", "topology")}
    assert_picture(save(draw_results([row], topology=TOPOLOGY), tmp_path / "row.png"))
    with pytest.raises(ValueError, match="topology"):
        draw_entry(row)


def test_a_picture_shows_itself_in_a_notebook(cluster_entry):
    fig = draw_entry(cluster_entry)
    assert isinstance(fig, Picture)
    assert fig._repr_png_().startswith(b"\x89PNG")


def test_paths_say_which_requests_stayed_on_the_entry_node_and_which_crossed(cluster_entry):
    paths = {p["pod"]: p for p in cluster_entry["paths"]}
    assert paths["web-1"]["nodes"] == ["node-a"] and paths["web-1"]["requests"] == 1
    assert paths["web-3"]["nodes"] == ["node-a", "node-b"]
    assert paths[None] == {"entry": "node-a", "podNode": None, "pod": None, "nodes": ["node-a"], "requests": 1,
                           "errors": {"timeout": 1}}
    forwarded = sum(p["requests"] for p in cluster_entry["paths"] if p["pod"] and p["podNode"] != "node-a")
    assert forwarded == int(cluster_entry["nodeHops"]["2"])  # the TTL agrees with the placement


def test_through_a_load_balancer_a_path_starts_at_the_pods_node():
    result = {"node": None, "servedBy": {"web-3": 2}, "failed": 0, "errors": {}}
    assert request_paths(result, POD_NODES) == [
        {"entry": None, "podNode": "node-b", "pod": "web-3", "nodes": ["node-b"], "requests": 2}]


def test_layout_puts_pods_inside_their_nodes_box_and_one_edge_per_link():
    pos, boxes = layout(TOPOLOGY)
    for pod in TOPOLOGY["pods"]:
        left, right = boxes[pod["node"]]
        assert left < pos[pod["name"]][0] < right
    assert boxes["node-a"][1] < boxes["node-b"][0], "node boxes overlap"
    links = {d["link"] for *_, d in cluster_graph(TOPOLOGY).edges(data=True)}
    assert links == {"client", "node-a", "node-b", "web-1", "web-2", "web-3"}  # the keys of linkBytes


def test_labels_stay_short():
    assert pod_label("web-1") == "web-1"
    assert pod_label("my-app-92w7szh8zz-25bg6") == "my-app-…25bg6"
    assert [human_bytes(n) for n in (0, 999, 1000, 51_000, 2_500_000)] == ["0 B", "999 B", "1.0 kB", "51.0 kB",
                                                                           "2.5 MB"]


def test_a_probe_through_a_load_balancer_is_drawn_from_the_router(tmp_path):
    records = [answered("web-1", "203.0.113.10", 1), answered("web-3", "203.0.113.10", 1)]
    row = entry_result(records, service="web", namespace="default", policy="Local", node_port=30080, node=None,
                       node_ip=None, inter_node_bytes=0, client_ttl=CLIENT_TTL, duration_s=0.5, via="loadBalancer")
    topology = dict(TOPOLOGY, loadBalancers=[{"service": "default/web", "ip": "198.51.100.10"}])
    assert_picture(save(draw_results([row], topology=topology), tmp_path / "lb.png"))
