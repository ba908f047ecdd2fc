"""``python -m bench.maglev_table``: what a Maglev table costs and how much it moves, by table size M (pure, no root).

For each of Cilium's table sizes up to its default: the flows one Maglev chain puts on every node (one per
slot), the time to build the table and to compile one Service port's flows on one node, and, for N
endpoints, the share of the table that changes hands beyond the leaving endpoint's own slots when one
of them goes (the worst over which one goes), next to Cilium's documented 1 %. The lab uses
``controllers.maglev.TABLE_SIZE``.
"""

from __future__ import annotations

import time

from controllers import maglev
from controllers.flows import T_MAGLEV
from controllers.pipeline import service_port_piece
from controllers.state import EndpointInfo, NodeInfo, ServicePortInfo

SIZES = (251, 1021, 4093, 16381)
COUNTS = (2, 3, 4, 6, 8, 10)
NODE = NodeInfo("node-a", 1, "172.18.0.11", "02:00:00:00:00:01", "10.244.1.0/24", "10.244.1.1",
                "02:00:00:00:00:02", 1)


def endpoints(n: int) -> tuple[EndpointInfo, ...]:
    return tuple(EndpointInfo(f"web-{i}", f"node-{i % 3}", f"10.244.{i % 3 + 1}.{2 + i // 3}", 8080) for i in range(n))


def extra_moved(n: int, size: int) -> float:
    names = [maglev.identity(e.ip, e.port) for e in endpoints(n)]
    full = maglev.lookup_table(names, size)
    worst = 0
    for gone in names:
        after = maglev.lookup_table([b for b in names if b != gone], size)
        worst = max(worst, sum(1 for a, b in zip(full, after, strict=True) if a != gone and a != b))
    return worst / size


def main() -> None:
    print(f"lab table size M = {maglev.TABLE_SIZE}")
    print(f"{'M':>6} {'flows/chain/node':>16} {'build ms (N=4)':>14} {'compile ms (N=4)':>16}  "
          + "  ".join(f"N={n:<2} moved+" for n in COUNTS))
    original = maglev.TABLE_SIZE
    try:
        for size in SIZES:
            maglev.TABLE_SIZE = size
            names = [maglev.identity(e.ip, e.port) for e in endpoints(4)]
            started = time.perf_counter()
            maglev._table.cache_clear()
            maglev.lookup_table(names, size)
            build = (time.perf_counter() - started) * 1000
            sp = ServicePortInfo("web", "default", "", "TCP", 80, 30080, "Cluster", endpoints(4), id=7,
                                 algorithm="maglev")
            started = time.perf_counter()
            piece = service_port_piece(NODE, sp)
            compile_ms = (time.perf_counter() - started) * 1000
            chain_flows = sum(1 for f in piece.flows.values() if f.table == T_MAGLEV)
            moved = "  ".join(f"{extra_moved(n, size):>9.2%}" for n in COUNTS)
            print(f"{size:>6} {chain_flows:>16} {build:>14.1f} {compile_ms:>16.1f}  {moved}")
    finally:
        maglev.TABLE_SIZE = original


if __name__ == "__main__":
    main()
