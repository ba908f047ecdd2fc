"""Bytes that cross zones, turned into the money a cloud bills for them.

AWS (EC2 "Data Transfer within the same AWS Region": across Availability Zones) and Google Cloud
(network pricing: between zones of one region) both list inter-zone transfer at 0.01 USD per GB, the
rate most often quoted for it; ``--cross-zone-price`` changes it. AWS bills it in each direction: the
sending zone's side pays for the bytes going out and the receiving side for the bytes coming in, so a
byte that crosses once is billed twice (``BILLED_ENDS``); a cloud that bills the sending side only is
``ends=1``. Bytes are counted once per crossing (``ClusterNetwork.cross_zone_bytes``: every node-to-node
byte between zones, requests and replies alike), and a GB is taken as 2**30 bytes (Google Cloud's
pages say GiB; read as 10**9 bytes the cost would be 7% more).
These are list prices, not a bill: discounts, free tiers and other charges (NAT, load balancers) are not
in them.
"""

from __future__ import annotations

from lab.errors import LabError

DEFAULT_PRICE_PER_GB = 0.01  # USD, inter-zone, each direction (AWS, Google Cloud list prices)
BILLED_ENDS = 2  # AWS: "in each direction"
GB = 2**30


def cross_zone_cost(nbytes: int | float, price_per_gb: float = DEFAULT_PRICE_PER_GB, ends: int = BILLED_ENDS) -> float:
    """USD billed for ``nbytes`` crossing between zones."""
    return nbytes / GB * price_per_gb * ends


def cost_per_million(bytes_per_request: float | None, price_per_gb: float = DEFAULT_PRICE_PER_GB,
                     ends: int = BILLED_ENDS) -> float | None:
    """USD per million requests that each cross ``bytes_per_request`` between zones (None: not measured)."""
    if bytes_per_request is None:
        return None
    return cross_zone_cost(bytes_per_request * 1_000_000, price_per_gb, ends)


def add_price_argument(parser) -> None:
    """``--cross-zone-price USD_PER_GB``, for ``apply`` and for scenarios that price crossings."""
    parser.add_argument("--cross-zone-price", type=float, default=DEFAULT_PRICE_PER_GB, metavar="USD_PER_GB",
                        help=f"price of a GB crossing zones, each direction (default {DEFAULT_PRICE_PER_GB}: the "
                             "inter-zone rate AWS and Google Cloud list)")


def check_price(price: float) -> float:
    """``--cross-zone-price``: a price in USD per GB, not negative."""
    if not price >= 0 or price == float("inf"):
        raise LabError(f"--cross-zone-price {price} is not a price", "give USD per GB, e.g. 0.01")
    return price


def cross_zone_fields(nbytes: int, answered: int) -> dict:
    """A probe result's cross-zone keys: the bytes its requests made cross between zones, per answer."""
    return {"crossZoneBytes": nbytes, "crossZoneBytesPerRequest": round(nbytes / answered, 1) if answered else None}


def zones_report(zones: dict[str, list[str]], results: list[dict], price_per_gb: float) -> dict:
    """The report's ``zones``: which nodes are in which zone, and what the probes made cross, priced."""
    crossed = sum(r.get("crossZoneBytes", 0) for r in results)
    answered = sum(r["ok"] for r in results if "crossZoneBytes" in r)
    per_request = crossed / answered if answered else None
    return {"zones": zones, "crossZoneBytes": crossed, "pricePerGB": price_per_gb, "billedEnds": BILLED_ENDS,
            "crossZoneCostUSD": cross_zone_cost(crossed, price_per_gb),
            "crossZoneCostPerMillionUSD": cost_per_million(per_request, price_per_gb)}


def render_zones(report: dict) -> str:
    spread = "; ".join(f"{zone}: {', '.join(nodes)}" for zone, nodes in report["zones"].items())
    per_million = report["crossZoneCostPerMillionUSD"]
    cost = "-" if per_million is None else f"{per_million:.4f} USD per million requests"
    return (f"zones: {spread}\nbytes across zones: {report['crossZoneBytes']:,} "
            f"({report['crossZoneCostUSD']:.8f} USD at {report['pricePerGB']} USD/GB each direction; {cost})")


def cluster_zones(cluster) -> dict[str, list[str]]:
    """Zone -> its nodes, in order (nodes without a zone under "-")."""
    spread: dict[str, list[str]] = {}
    for node in cluster.nodes:
        spread.setdefault(node.zone or "-", []).append(node.name)
    return spread
