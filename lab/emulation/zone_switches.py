"""The zone switches' side effects: their static flows installed at build, their counters read at once.

What the flows are and what the counters mean is ``topologies.zones`` (pure); this is the ``ovs-ofctl``
around it. The flows are written to a file of the run and added in one ``add-flows`` per switch, all
switches at once; the counters of the core and every zone switch are dumped side by side, so a reading
of ``inter_node_bytes`` or ``cross_zone_bytes`` sees the bridges within a few milliseconds of each other.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

from lab.errors import LabError
from lab.kube.model import Cluster
from topologies.zones import Counters, counted_bridges, zone_flows, zone_layout

NO_NETEM = ("this kernel has no netem qdisc: the links between zones run without delay (asked for {ms} ms); "
            "no delay is faked")


def zone_link_delay_ms(cluster: Cluster, has_netem: bool, warnings: list[str]) -> float | None:
    """Each inter-zone link's netem delay: half the one-way delay between zones (a frame from one zone to
    another crosses two of them), or None, with one warning, where the kernel has no netem."""
    if not cluster.zone_delay_ms or not zone_layout(cluster):
        return None
    if not has_netem:
        warnings.append(NO_NETEM.format(ms=cluster.zone_delay_ms))
        return None
    return cluster.zone_delay_ms / 2


def install_zone_flows(cluster: Cluster, path_of) -> None:
    """Every zone switch's program (``path_of(name)``: a file of the run to write it to)."""
    procs = []
    for zone in zone_layout(cluster):
        path = path_of(f"flows-{zone.bridge}.txt")
        with open(path, "w") as f:
            f.writelines(line + "\n" for line in zone_flows(zone))
        procs.append((zone.bridge, subprocess.Popen(
            ["ovs-ofctl", "-O", "OpenFlow13", "add-flows", zone.bridge, path],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
    for bridge, proc in procs:
        _, err = proc.communicate(timeout=30)
        if proc.returncode != 0:
            raise LabError(f"could not install the flows of zone switch {bridge}: {err.strip()[-200:]}")


def read_counters(cluster: Cluster, dump_ports) -> Counters:
    """(received, sent) bytes per port of the core and of every zone switch, read side by side."""
    bridges = counted_bridges(cluster)
    if len(bridges) == 1:
        return {bridges[0]: dump_ports(bridges[0])}
    with ThreadPoolExecutor(max_workers=min(4, len(bridges))) as pool:
        return dict(zip(bridges, pool.map(dump_ports, bridges), strict=True))
