"""From raw probe records and counters to the report: pure functions, then a table and a verdict.

The JSON keys of ``entry_result`` and ``Report`` are a contract (README, notebooks and tests read them):
add keys freely, rename none. Hops come from what the pods observed: the TTL of the connection's SYN
as the pod received it, against the TTL the client sent with, less the one hop of the edge router
that every outside request crosses. Source addresses are classified by what they belong to, so the
table can say "node-a" rather than an address.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from lab.kube import addressing as addr
from lab.kube.endpoints import endpoints, selected_pods
from lab.kube.model import Cluster
from lab.measure.coverage import headless_services, operator_hint
from lab.measure.probe import percentiles

EDGE_ROUTER_HOPS = 1  # client -> edge router -> node: the router decrements the TTL once


@dataclass
class Report:
    client: dict
    nodes: list[dict]
    pods: list[dict]
    results: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    machine: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)  # pods the scheduler could not place
    ignored: list[dict] = field(default_factory=list)  # objects of kinds the lab does not model

    def to_dict(self) -> dict:
        return {"client": self.client, "nodes": self.nodes, "pods": self.pods, "pending": self.pending,
                "results": self.results, "warnings": self.warnings, "ignored": self.ignored,
                "machine": self.machine, "timings": self.timings}


def new_report(cluster: Cluster) -> Report:
    """The report's frame; callers add ``cluster.warnings`` to ``warnings`` when they print them."""
    return Report(
        client={"name": addr.CLIENT_NAME, "ip": addr.CLIENT_IP},
        nodes=[{"name": n.name, "ip": addr.node_ip(n.index), "labels": dict(n.labels),
                "taints": [{"key": t.key, "value": t.value, "effect": t.effect} for t in n.taints]}
               for n in cluster.nodes],
        pods=[{"name": p.name, "namespace": p.namespace, "node": p.node, "ip": p.ip,
               "owner": f"{p.owner_kind}/{p.owner}" if p.owner else None} for p in cluster.pods],
        pending=list(cluster.pending), ignored=list(cluster.ignored))


def address_owners(cluster: Cluster) -> dict[str, str]:
    """Who an address is: the client, a node (its node IP), a node's pod gateway, or a pod."""
    owners = {addr.CLIENT_IP: "client"}
    for n in cluster.nodes:
        owners[addr.node_ip(n.index)] = f"node {n.name}"
        owners[addr.pod_gateway_ip(n.index)] = f"node {n.name} (pod gateway)"
    for p in cluster.pods:
        owners[p.ip] = f"pod {p.name}"
    return owners


def entry_result(records: list[dict], *, service: str, namespace: str, policy: str, node_port: int,
                 node: str | None, node_ip: str | None, inter_node_bytes: int, client_ttl: int,
                 duration_s: float, via: str = "nodePort", port: int | None = None,
                 port_name: str | None = None, router_hops: int = EDGE_ROUTER_HOPS) -> dict:
    """``router_hops``: routers between the client and the nodes (the edge router for the outside
    client, none for a pod inside the cluster), left out of ``nodeHops``."""
    ok = [r for r in records if r["ok"] and r.get("response")]
    served = Counter(r["response"]["pod"] for r in ok)
    sources = Counter(r["response"]["source"]["ip"] for r in ok)
    hops = Counter(str(client_ttl - router_hops - r["response"]["synTTL"])
                   for r in ok if r["response"].get("synTTL") is not None)
    errors = Counter(r["error"] for r in records if not r["ok"])
    latency = percentiles([r["latencyMs"] for r in ok], (50, 95))
    return {
        "service": service, "namespace": namespace, "policy": policy, "port": port, "portName": port_name,
        "nodePort": node_port, "via": via,
        "node": node, "nodeIP": node_ip, "requests": len(records), "ok": len(ok),
        "failed": len(records) - len(ok), "errors": dict(errors),
        "servedBy": dict(sorted(served.items())), "sourcesSeen": dict(sorted(sources.items())),
        "nodeHops": dict(sorted(hops.items())), "interNodeBytes": inter_node_bytes,
        "interNodeBytesPerRequest": round(inter_node_bytes / len(ok), 1) if ok else None,
        "latencyMs": {"p50": _round(latency[50]), "p95": _round(latency[95])},
        "durationS": round(duration_s, 3),
        "requestsPerSecond": round(len(records) / duration_s, 1) if duration_s > 0 else None,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def request_paths(result: dict, pod_nodes: dict[str, str]) -> list[dict]:
    """Where one probe's requests went: per answering pod, the nodes crossed; then the unanswered ones.

    ``nodes`` is the entry node, then the pod's node when it is another one (the request was forwarded
    across the underlay: the pod saw two node hops). Through a load balancer the entry node is not in the
    aggregate (``node`` is None), so the path starts at the pod's node.
    """
    entry = result["node"]
    paths = []
    for pod, count in result["servedBy"].items():
        pod_node = pod_nodes.get(pod)
        nodes = [n for n in (entry, pod_node) if n is not None]
        paths.append({"entry": entry, "podNode": pod_node, "pod": pod, "nodes": list(dict.fromkeys(nodes)),
                      "requests": count})
    if result["failed"]:
        paths.append({"entry": entry, "podNode": None, "pod": None, "nodes": [entry] if entry else [],
                      "requests": result["failed"], "errors": dict(result["errors"])})
    return paths


# --- rendering -----------------------------------------------------------------------------------------

TOP = 3  # entries a cell lists before "+N more"


def _counts(counter: dict, label=lambda k: k, top: int = TOP) -> str:
    ranked = sorted(counter.items(), key=lambda kv: -kv[1])
    shown = ", ".join(f"{label(k)} {v}" for k, v in ranked[:top]) or "-"
    return shown + (f", +{len(ranked) - top} more" if len(ranked) > top else "")


def service_label(name: str, namespace: str) -> str:
    """``web`` in the default namespace, ``shop/web`` elsewhere."""
    return name if namespace == "default" else f"{namespace}/{name}"


def port_label(result: dict) -> str:
    """``http:80`` (or ``80``) and the nodePort behind it."""
    port = result.get("port")
    name = result.get("portName")
    head = f"{name}:{port}" if name and port is not None else str(port) if port is not None else "?"
    return f"{head} -> {result['nodePort']}" if result.get("nodePort") else head


def no_endpoints(cluster: Cluster, namespace: str, name: str, port: int | None) -> str | None:
    """Why a Service port has no endpoints ("selector app=x matches no pod"), or None when it has some."""
    try:
        service = cluster.service(name, namespace)
    except KeyError:
        return None
    if not service.selector:
        return "no endpoints: the Service has no selector"
    pods = selected_pods(cluster, service)
    if not pods:
        selector = ",".join(f"{k}={v}" for k, v in service.selector.items())
        return f"no endpoints: selector {selector} matches no pod"
    for sp in service.ports:
        if port in (None, sp.port) and not endpoints(cluster, service, sp):
            return f"no endpoints: no selected pod declares port {sp.target_port}"
    return None


def render_table(report: Report, cluster: Cluster) -> str:
    """One row per (Service, port, entry): the entry is a node (nodePort) or the load balancer."""
    owners = address_owners(cluster)

    def source_label(ip: str) -> str:
        who = owners.get(ip, "?")
        return f"{ip} ({who.replace('node ', '').replace(' (pod gateway)', ' gw')})"

    header = ["service", "port", "policy", "entry", "ok/failed", "served by", "source IP seen by pods",
              "node hops", "bytes between nodes", "p50 ms"]
    rows = []
    for r in report.results:
        hops = _counts(r["nodeHops"], lambda k: f"{k}:").replace(": ", ":")
        empty = no_endpoints(cluster, r.get("namespace", "default"), r["service"], r.get("port"))
        served = empty if empty and not r["ok"] else _counts(r["servedBy"])
        entry = r["node"] or f"LB {r.get('loadBalancerIP', '')}".strip()
        if r["via"] == "clusterIP":
            entry = f"{r['node']} pod -> clusterIP"
        rows.append([
            service_label(r["service"], r.get("namespace", "default")), port_label(r), r["policy"],
            entry, f"{r['ok']}/{r['failed']}", served,
            _counts(r["sourcesSeen"], source_label), hops, f"{r['interNodeBytes']:,}",
            "-" if r["latencyMs"]["p50"] is None else f"{r['latencyMs']['p50']:.2f}"])
    return format_table(header, rows)


def render_health_checks(checks: list[dict]) -> str:
    rows = [[service_label(c["service"], c.get("namespace", "default")), c["node"], f"{c['port']}{c['path']}",
             str(c["status"]), str(c["localEndpoints"])] for c in checks]
    return format_table(["service", "node", "health check", "HTTP status", "localEndpoints"], rows)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def verdict(report: Report, cluster: Cluster) -> list[str]:
    """Plain-language sentences naming the three costs of Cluster and the price of Local, with numbers.

    Services without endpoints are said apart (every request fails there, under any policy), so the
    sentences about the policies speak only of Services that could answer, and never of "0 of 0".
    """
    by_policy: dict[str, list[dict]] = {}
    lines = []
    silent: dict[tuple[str, str], list[dict]] = {}
    for r in report.results:
        if no_endpoints(cluster, r.get("namespace", "default"), r["service"], r.get("port")):
            silent.setdefault((r.get("namespace", "default"), r["service"]), []).append(r)
        elif r["via"] == "nodePort":
            by_policy.setdefault(r["policy"], []).append(r)
    lines += east_west(report, cluster)
    lines += session_affinity(report, cluster)
    cluster_rs, local_rs = by_policy.get("Cluster", []), by_policy.get("Local", [])
    if cluster_rs:
        ok = sum(r["ok"] for r in cluster_rs)
        two = sum(int(r["nodeHops"].get("2", 0)) for r in cluster_rs)
        client_seen = sum(r["sourcesSeen"].get(addr.CLIENT_IP, 0) for r in cluster_rs)
        nbytes = sum(r["interNodeBytes"] for r in cluster_rs)
        if ok:
            lines.append(f"Extra hop: under Cluster {two} of {ok} answered requests ({_pct(two, ok)}) crossed a "
                         "second node before reaching a pod (TTL seen by the pod).")
            lines.append(f"Lost client IP: under Cluster the pods saw the client's address {client_seen} times "
                         f"out of {ok}; every other request showed a node address instead (SNAT).")
            lines.append(f"Bandwidth between nodes: Cluster moved {nbytes:,} bytes between nodes "
                         f"({nbytes / ok:,.0f} per request).")
        else:
            sent = sum(r["requests"] for r in cluster_rs)
            lines.append(f"Under Cluster none of {sent} requests was answered ({_errors(cluster_rs)}).")
    if local_rs:
        ok = sum(r["ok"] for r in local_rs)
        client_seen = sum(r["sourcesSeen"].get(addr.CLIENT_IP, 0) for r in local_rs)
        nbytes = sum(r["interNodeBytes"] for r in local_rs)
        one = sum(int(r["nodeHops"].get("1", 0)) for r in local_rs)
        if ok:
            lines.append(f"Local instead: the pods saw the client's own address in {client_seen} of {ok} answered "
                         f"requests, {one} took a single node hop, and {nbytes:,} bytes crossed between nodes.")
        dead: dict[tuple[str, str, str], list[dict]] = {}
        for r in local_rs:
            if r["ok"] == 0 and r["requests"]:
                dead.setdefault((r.get("namespace", "default"), r["service"], r["node"]), []).append(r)
        for (namespace, name, node), rs in dead.items():
            timeouts = all(set(r["errors"]) == {"timeout"} for r in rs)
            how = "dropped every connection silently" if timeouts else "answered none of its requests"
            ports = " and ".join(str(r.get("port") or r["nodePort"]) for r in rs)
            lines.append(f"Price of Local: node {node} has no pod of {service_label(name, namespace)}, so it {how} "
                         f"on port{'s' if len(rs) > 1 else ''} {ports} ({_errors(rs)}); a client or load balancer "
                         "sending there gets nothing.")
    for (namespace, name), rs in silent.items():
        why = no_endpoints(cluster, namespace, name, rs[0].get("port")) or "no endpoints"
        sent = sum(r["requests"] for r in rs)
        hint = operator_hint(cluster, cluster.service(name, namespace))
        lines.append(f"{service_label(name, namespace)} has {why}: all {sent} requests to it failed "
                     f"({_errors(rs)}), " + (f"but {hint}." if hint else "as they would in a real cluster."))
    return lines + headless_services(cluster)


def east_west(report: Report, cluster: Cluster) -> list[str]:
    """The bill for traffic that never leaves the cluster: in-cluster clients of clusterIPs, how many
    of their requests were served on another node, and the bytes that crossed between nodes."""
    rows = [r for r in report.results if r["via"] == "clusterIP"]
    if not rows:
        return []
    pod_node = {p.name: p.node for p in cluster.pods}
    ok = sum(r["ok"] for r in rows)
    crossed = sum(n for r in rows for pod, n in r["servedBy"].items() if pod_node.get(pod) != r["node"])
    nbytes = sum(r["interNodeBytes"] for r in rows)
    if not ok:
        return ["East-west: no in-cluster request to a clusterIP was answered."]
    return [f"East-west: of {ok} answered in-cluster requests to clusterIPs (a client pod on each node), "
            f"{crossed} ({_pct(crossed, ok)}) were served on another node, moving {nbytes:,} bytes between "
            f"nodes ({nbytes / ok:,.0f} per request); internalTrafficPolicy: Local (or topology-aware "
            "routing) keeps them on the node."]


def session_affinity(report: Report, cluster: Cluster) -> list[str]:
    """Why a Service with ``sessionAffinity: ClientIP`` shows one pod per way in: kube-proxy remembers a
    client's endpoint per node (its ``recent`` lists), so a client entering by several nodes may meet
    several pods. A way in that spread one client's requests is said too: that is not kube-proxy. Only
    ways in through one node count: a cloud load balancer spreads a client over nodes (each with its own
    memory), and an Ingress or Gateway proxy is the client kube-proxy sees, or reaches pods directly."""
    lines = []
    by_service: dict[tuple[str, str], list[dict]] = {}
    for r in report.results:
        if r["via"] in ("nodePort", "clusterIP"):
            by_service.setdefault((r.get("namespace", "default"), r["service"]), []).append(r)
    for (namespace, name), rows in by_service.items():
        try:
            timeout = cluster.service(name, namespace).session_affinity_timeout
        except KeyError:
            continue
        answered = [r for r in rows if r["ok"]]
        if timeout is None or not answered:
            continue
        spread = [r for r in answered if len(r["servedBy"]) > 1]
        pods = {pod for r in answered for pod in r["servedBy"]}
        label = service_label(name, namespace)
        if spread:
            lines.append(f"Session affinity: {label} (ClientIP, {timeout} s) spread one client's requests over "
                         f"several pods on {len(spread)} of {len(answered)} ways in; kube-proxy would not "
                         "(were its endpoints changing?).")
        else:
            ways = f"all {len(answered)} ways in" if len(answered) > 1 else "its 1 way in"
            lines.append(f"Session affinity: {label} (ClientIP, {timeout} s) kept each client on one pod on {ways}; "
                         f"kube-proxy remembers per node, so across them the clients met "
                         f"{len(pods)} pod{'s' if len(pods) > 1 else ''}.")
    return lines


def _errors(results: list[dict]) -> str:
    total: Counter = Counter()
    for r in results:
        total.update(r["errors"])
    return ", ".join(f"{v} {k}" for k, v in total.most_common()) or "no errors recorded"


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "n/a"
