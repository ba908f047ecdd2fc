"""What a bench run measures and how many times: one dataclass, a full and a quick preset."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

BENCHMARKS = ("time-to-result", "datapath", "control-plane", "scale", "probe-rate")


@dataclass(frozen=True)
class Config:
    runs: int = 3
    heavy_runs: int = 1  # runs of the slowest cases: clusters of 20 nodes and more
    only: tuple[str, ...] = BENCHMARKS
    scenario_requests: int = 200  # the default scenario's own setting: time to result measures it as is
    # datapath
    iperf_seconds: float = 2.0  # after one omitted second of TCP slow start
    conn_seconds: float = 2.0
    conn_concurrency: int = 8
    # control plane
    cp_nodes: int = 10
    cp_pods_per_node: int = 10
    cp_services: tuple[int, ...] = (1, 100, 1000, 10000)
    change_backgrounds: tuple[int, ...] = (0, 1000)  # Services installed while pods change
    changes: int = 100  # per background; a p99 needs about 100 samples to be more than the maximum
    # scale
    scale_nodes: tuple[int, ...] = (5, 10, 20, 50, 100)
    scale_pods_per_node: int = 10
    # probe rate
    probe_requests: int = 2000
    probe_concurrency: tuple[int, ...] = (1, 8, 32)
    extra: dict = field(default_factory=dict)

    def runs_for(self, heavy: bool) -> int:
        return min(self.runs, self.heavy_runs) if heavy else self.runs

    def to_dict(self) -> dict:
        return asdict(self)


def quick(cfg: Config) -> Config:
    """Well under a minute: one run, smaller sizes, shorter transfers."""
    return replace(cfg, runs=1, heavy_runs=1, iperf_seconds=1.0, conn_seconds=1.0, cp_services=(1, 100),
                   change_backgrounds=(0,), changes=30, scale_nodes=(5,), probe_requests=1000,
                   probe_concurrency=(8,))


def select(names: list[str] | None) -> tuple[str, ...]:
    """Benchmark names from ``--only`` (unique prefixes allowed), in the canonical order."""
    if not names:
        return BENCHMARKS
    chosen = set()
    for name in names:
        matches = [b for b in BENCHMARKS if b == name] or [b for b in BENCHMARKS if b.startswith(name)]
        if len(matches) != 1:
            raise ValueError(f"unknown or ambiguous benchmark {name!r}: choose from {', '.join(BENCHMARKS)}")
        chosen.add(matches[0])
    return tuple(b for b in BENCHMARKS if b in chosen)


def parse_sizes(text: str, minimum: int = 1) -> tuple[int, ...]:
    """``"5,10,20"`` -> (5, 10, 20); every size an integer of at least ``minimum``."""
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"sizes must be comma-separated integers, got {text!r}") from None
    if not sizes or any(s < minimum for s in sizes):
        raise ValueError(f"sizes must be integers of at least {minimum}, got {text!r}")
    return sizes
