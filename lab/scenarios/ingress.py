"""The seed article's production remedy, measured: an Ingress controller in front of the apps.

``examples/ingress``: two apps (shop, blog) behind ClusterIP Services; ingress-nginx's controller (two
pods, on node-a and node-b only) behind a LoadBalancer Service; one Ingress with host and path rules and
one TLS host; the same apps behind a Gateway with a 90/10 weighted HTTPRoute; ``blog-direct``, the blog
through a plain NodePort, to measure the L7 hop against::

    client ── edge router / load balancer ──┬── node-a: ingress-nginx, shop, blog
                                            ├── node-b: ingress-nginx, shop, blog
                                            └── node-c: Gateway's NGINX, shop-canary

One network; the controller's Service runs under Cluster, then Local, then Local behind the PROXY-protocol
load balancer (HAProxy in the ``lb`` host, NGINX reading the PROXY header). For each mode and entry (every
node at the nodePort, then the load balancer) ``http://blog.example.com/`` is probed, and the blog's
direct NodePort through the same node. A row says what answered, the client as the app saw it (the
``X-Forwarded-For`` header) beside the TCP source it saw (always an ingress pod), the node hops of both legs
(client -> ingress pod, ingress pod -> app pod), bytes between nodes per leg, the latency the L7 hop adds
and NGINX's CPU time per request.

Bytes per leg come from real counters, split by what each request did: an app pod's link carries only the
second leg, so the second leg's bytes between nodes are each app pod's bytes times the share of its
requests that came from an ingress pod on another node; the first leg's are the rest of the bytes that
crossed between nodes.
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

from lab.cloud.network import PASS_THROUGH, PROXY_PROTOCOL, LabNetwork
from lab.kube import addressing as addr
from lab.kube.manifests import load_manifests
from lab.measure.experiment import set_policy, wait_rotation
from lab.measure.measurements import link_bytes
from lab.measure.probe import percentiles
from lab.measure.report import format_table, new_report
from lab.measure.routes import counts_text
from lab.measure.stats import chi_square
from lab.scenarios import Outcome

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ingress"
HOST, PATH = "blog.example.com", "/"
MODES = (("Cluster", "Cluster", PASS_THROUGH), ("Local", "Local", PASS_THROUGH),
         ("PROXY protocol", "Local", PROXY_PROTOCOL))
CANARY_REQUESTS = 400


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", action="append", help="manifests to use instead of examples/ingress")


# --- pure: from records and counters to a row ---------------------------------------------------------


def legs(records: list[dict], cluster, entry_node: str | None) -> dict:
    """Node hops of both legs, per request that got an answer: which ingress pod and app pod served it."""
    by_ip = {p.ip: p for p in cluster.pods}
    leg1, leg2, pairs = Counter(), Counter(), Counter()
    for r in records:
        resp = r.get("response")
        if not isinstance(resp, dict) or resp.get("source", {}).get("ip") not in by_ip:
            continue
        proxy = by_ip[resp["source"]["ip"]]
        if entry_node is not None:
            leg1["same node" if proxy.node == entry_node else "other node"] += 1
        leg2["same node" if proxy.node == resp["node"] else "other node"] += 1
        pairs[(proxy.node, resp["pod"])] += 1
    return {"clientToIngress": dict(leg1), "ingressToApp": dict(leg2), "pairs": pairs}


def leg_bytes(before: dict[str, int], after: dict[str, int], pairs: Counter, cluster, proxying_lb: bool) -> dict:
    """Bytes between nodes per leg, from link counters (see the module docstring).

    Every byte between two nodes crosses two node links; every byte from outside crosses one. From outside
    come the client's (its link) and the ``lb`` host's health checks (its link) with a pass-through load
    balancer; with the proxying one the client's bytes reach the nodes only through HAProxy, so they are
    counted on the ``lb`` link, which also carries the client's leg to HAProxy."""
    delta = {k: after[k] - before.get(k, 0) for k in after}
    nodes = [n.name for n in cluster.nodes]
    client, lb = delta.get(addr.CLIENT_NAME, 0), delta.get(addr.LB_NAME, 0)
    outside = lb - client if proxying_lb else lb + client
    internode = max(0, (sum(delta[n] for n in nodes) - outside) // 2)
    app_nodes = {p.name: p.node for p in cluster.pods}
    second = 0.0
    for pod in {pod for _, pod in pairs}:
        total = sum(n for (_, p), n in pairs.items() if p == pod)
        remote = sum(n for (node, p), n in pairs.items() if p == pod and node != app_nodes[pod])
        second += delta.get(pod, 0) * remote / total if total else 0
    second_i = min(internode, round(second))
    return {"clientToIngress": internode - second_i, "ingressToApp": second_i, "total": internode}


def _summary(records: list[dict]) -> dict:
    answered = [r for r in records if r.get("status") is not None]
    responses = [r["response"] for r in answered if isinstance(r.get("response"), dict)]
    q = percentiles([r["latencyMs"] for r in answered if r.get("latencyMs") is not None], [50, 95])
    return {"requests": len(records), "statusCodes": dict(Counter(str(r["status"]) for r in answered)),
            "errors": len(records) - len(answered),
            "servedBy": dict(Counter(resp["pod"] for resp in responses)),
            "forwardedFor": dict(Counter(resp.get("headers", {}).get("x-forwarded-for", "") for resp in responses)),
            "sources": dict(Counter(resp["source"]["ip"] for resp in responses)),
            "latencyMs": {"p50": q[50], "p95": q[95]}}


# --- side effects ------------------------------------------------------------------------------------


def _cpu_ns(pids: list[int]) -> int:
    """Time on CPU of these processes, in ns (``/proc/<pid>/schedstat``, finer than clock ticks)."""
    total = 0
    for pid in pids:
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
        except (OSError, ValueError):
            continue
    return total


def _nginx_pids(lab: LabNetwork) -> list[int]:
    return [pid for p in lab.proxies.running.values() for pid in (p.proc.pid, *p.workers)]


def _probe_row(lab: LabNetwork, mode: str, entry: str, target: str, requests: int, direct: str | None) -> dict:
    cluster = lab.cluster
    before, cpu0 = _links(lab), _cpu_ns(_nginx_pids(lab))
    records = lab.probe([target], requests, timeout=1.0, path=PATH, http_host=HOST)["records"]
    cpu1, after = _cpu_ns(_nginx_pids(lab)), _links(lab)
    summary = _summary(records)
    hops = legs(records, cluster, None if entry == "lb" else entry)
    answered = sum(int(n) for s, n in summary["statusCodes"].items())
    row = {"mode": mode, "entry": entry, "target": target, **summary,
           "hops": {"clientToIngress": hops["clientToIngress"], "ingressToApp": hops["ingressToApp"]},
           "bytesBetweenNodes": leg_bytes(before, after, hops["pairs"], cluster,
                                          entry == "lb" and lab.lb_mode == PROXY_PROTOCOL),
           "nginxCpuUsPerRequest": round((cpu1 - cpu0) / 1000 / answered, 1) if answered else None}
    if direct:
        row["direct"] = _summary(lab.probe([direct], requests, timeout=1.0, path=PATH)["records"])
    return row


def _links(lab: LabNetwork) -> dict[str, int]:
    links = link_bytes(lab)
    links[addr.LB_NAME] = lab.port_bytes(addr.underlay_bridge()).get(addr.UNDERLAY_LB_PORT, 0)
    return links


def _canary(lab: LabNetwork) -> dict:
    gateway = lab.cluster.service("web-nginx")
    target = f"{lab.load_balancer_ip('web-nginx')}:{gateway.ports[0].port}"
    records = lab.probe([target], CANARY_REQUESTS, timeout=2.0, http_host="shop.example.com")["records"]
    served = Counter("shop-canary" if "canary" in r["response"]["pod"] else "shop"
                     for r in records if isinstance(r.get("response"), dict))
    observed = [served["shop"], served["shop-canary"]]
    return {"target": target, "requests": CANARY_REQUESTS, "served": dict(served),
            "canaryShare": round(observed[1] / sum(observed), 3) if sum(observed) else None,
            "fit90to10p": round(chi_square(observed, [0.9, 0.1])[1], 4) if sum(observed) else None}


def run(args, progress) -> Outcome:
    cluster = load_manifests(args.file or [str(EXAMPLE)])
    report = new_report(cluster)
    controller = cluster.service("ingress-nginx-controller", "ingress-nginx")
    http = next(sp for sp in controller.ports if sp.name == "http")
    direct = cluster.service("blog-direct")
    rows = []
    with LabNetwork(cluster, log=progress, lb_profile="fast") as lab:
        report.warnings += cluster.warnings + lab.warnings
        for mode, policy, lb_mode in MODES:
            set_policy(lab, controller, policy)
            lab.set_lb_mode(lb_mode)
            wait_rotation(lab, controller)
            for node in cluster.nodes:
                ip = addr.node_ip(node.index)
                progress(f"{mode}: http://{HOST}{PATH} via {node.name}, {args.requests} requests")
                rows.append(_probe_row(lab, mode, node.name, f"{ip}:{http.node_port}", args.requests,
                                       f"{ip}:{direct.ports[0].node_port}"))
            lb = lab.ingress_entry_lb or lab.load_balancer_ip(controller.name, controller.namespace)
            progress(f"{mode}: http://{HOST}{PATH} via the load balancer {lb}, {args.requests} requests")
            rows.append(_probe_row(lab, mode, "lb", f"{lb}:{http.port}", args.requests, None))
        lab.set_lb_mode(PASS_THROUGH)
        canary = _canary(lab)
    document = report.to_dict()
    document["ingress"] = {"rows": rows, "canary": canary}
    return Outcome(report=document, table=render(rows, cluster), verdict=verdict(rows, canary, cluster),
                   warnings=report.warnings)


# --- rendering ---------------------------------------------------------------------------------------


def _ms(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(rows: list[dict], cluster) -> str:
    names = {p.ip: f"{p.owner or p.name}@{p.node}" for p in cluster.pods}
    owners = {p.name: f"{p.owner or p.name}@{p.node}" for p in cluster.pods}
    table = []
    for r in rows:
        served = Counter()
        for pod, n in r["servedBy"].items():
            served[owners.get(pod, pod)] += n
        sources = Counter()
        for ip, n in r["sources"].items():
            sources[names.get(ip, ip)] += n
        added = None
        if r.get("direct") and r["latencyMs"]["p50"] is not None and r["direct"]["latencyMs"]["p50"] is not None:
            added = r["latencyMs"]["p50"] - r["direct"]["latencyMs"]["p50"]
        status = counts_text(r["statusCodes"]) + (f" timeouts:{r['errors']}" if r["errors"] else "")
        table.append([r["mode"], r["entry"], status, counts_text(dict(served)), counts_text(r["forwardedFor"]),
                      counts_text(dict(sources)),
                      counts_text(r["hops"]["clientToIngress"]) if r["entry"] != "lb" else "(lb)",
                      counts_text(r["hops"]["ingressToApp"]),
                      f"{r['bytesBetweenNodes']['clientToIngress']}/{r['bytesBetweenNodes']['ingressToApp']}",
                      f"{_ms(r['latencyMs']['p50'])}/{_ms(r['latencyMs']['p95'])}", _ms(added),
                      "-" if r["nginxCpuUsPerRequest"] is None else f"{r['nginxCpuUsPerRequest']:.0f}"])
    return format_table(["mode", "entry", "status", "served by", "X-Forwarded-For", "TCP source at the app",
                         "client->ingress", "ingress->app", "bytes between nodes leg1/leg2", "p50/p95 ms",
                         "+ms vs NodePort", "NGINX us/req"], table)


def verdict(rows: list[dict], canary: dict, cluster) -> list[str]:
    lines = []
    ok = [r for r in rows if r["statusCodes"].get("200")]
    kept = {r["mode"] for r in ok if set(r["forwardedFor"]) == {addr.CLIENT_IP}}
    lost = {r["mode"] for r in ok if addr.CLIENT_IP not in r["forwardedFor"]}
    lines.append(f"One entry point, L7 routing and TLS: every answered request came through an ingress pod "
                 f"({sum(sum(r['sources'].values()) for r in ok)} requests in {len(ok)} probes); the app's TCP source "
                 f"is always an ingress pod, so the client exists for the app only in X-Forwarded-For.")
    if kept:
        lines.append(f"X-Forwarded-For carries the client ({addr.CLIENT_IP}) under: {', '.join(sorted(kept))}.")
    if lost:
        lines.append(f"Under {', '.join(sorted(lost))} it carries a node address instead: the L4 hop lost the client.")
    dropped = [f"{r['entry']}" for r in rows if r["mode"] == "Local" and r["errors"] and not r["statusCodes"]]
    if dropped:
        lines.append(f"Local drops what reaches a node without an ingress pod: every request via "
                     f"{', '.join(dropped)} timed out.")
    deaf = [r["entry"] for r in rows if r["mode"] == "PROXY protocol" and r["entry"] != "lb" and not r["statusCodes"]]
    if deaf:
        lines.append(f"With the PROXY protocol on, NGINX waits for the PROXY header: direct requests via "
                     f"{', '.join(deaf)} got no HTTP answer (both ends must switch together).")
    cross = sum(r["hops"]["ingressToApp"].get("other node", 0) for r in ok)
    total = sum(sum(r["hops"]["ingressToApp"].values()) for r in ok)
    leg2 = sum(r["bytesBetweenNodes"]["ingressToApp"] for r in ok)
    if total:
        lines.append(f"What Ingress does not fix: the second leg, ingress pod -> app pod, crossed nodes for "
                     f"{cross} of {total} requests ({100 * cross / total:.0f}%, {leg2} bytes between nodes), whatever "
                     f"the mode, unless the app pods are where the ingress pods are.")
    added = [r["latencyMs"]["p50"] - r["direct"]["latencyMs"]["p50"] for r in ok
             if r.get("direct") and r["latencyMs"]["p50"] is not None and r["direct"]["latencyMs"]["p50"] is not None]
    if added:
        lines.append(f"The L7 hop adds {min(added):.1f} to {max(added):.1f} ms at p50 against the blog's direct "
                     f"NodePort (shared 2-core machine: noisy).")
    if canary.get("canaryShare") is not None:
        lines.append(f"Gateway API: the 90/10 HTTPRoute sent {canary['served'].get('shop-canary', 0)} of "
                     f"{sum(canary['served'].values())} requests to the canary (share {canary['canaryShare']}, "
                     f"chi-square p = {canary['fit90to10p']} against 90/10).")
    return lines
