"""Ingress and Gateway API on real NGINX, with HAProxy as the PROXY-protocol load balancer (checklist items
23-25 of ../shared/reference/kubernetes-semantics.md section 9), checked with real HTTP(S) requests.

The example of ``examples/ingress`` (the apps behind ClusterIP Services, ingress-nginx pods on node-a and
node-b, the Gateway's pod on node-c, both Services LoadBalancer with Local), plus an Ingress of rule
shapes and a TLS Secret.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter

import pytest

from lab.cloud.network import PASS_THROUGH, PROXY_PROTOCOL, LabNetwork
from lab.ingress.certificates import FAKE_CERTIFICATE_CN, CertificateAuthority
from lab.kube import addressing as addr
from lab.kube.manifests import load_manifests
from lab.measure.experiment import set_policy
from lab.measure.stats import chi_square

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIT_P = 0.001
SECRET_CN = "secure.example.com (from its Secret)"
SHAPES = """
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: shapes}
spec:
  tls: [{hosts: [secure.example.com], secretName: secure-tls}]
  rules:
    - host: paths.example.com
      http:
        paths:
          - {path: /app, pathType: Prefix, backend: {service: {name: blog, port: {number: 80}}}}
          - {path: /app/admin, pathType: Exact, backend: {service: {name: shop, port: {number: 80}}}}
          - {path: /gone, pathType: Prefix, backend: {service: {name: gone, port: {number: 80}}}}
    - host: secure.example.com
      http:
        paths:
          - {path: /, pathType: Prefix, backend: {service: {name: blog, port: {number: 80}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: moved}
spec:
  parentRefs: [{name: web}]
  hostnames: [old.example.com]
  rules:
    - filters: [{type: RequestRedirect, requestRedirect: {hostname: shop.example.com, statusCode: 301}}]
---
apiVersion: v1
kind: Secret
metadata: {name: secure-tls}
type: kubernetes.io/tls
stringData:
  tls.crt: |
CERT
  tls.key: |
KEY
"""


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.strip().splitlines())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ingress")
    for name in ("nodes.yaml", "apps.yaml", "ingress-nginx.yaml", "ingress.yaml", "gateway.yaml"):
        shutil.copy(os.path.join(REPO, "examples/ingress", name), folder / name)
    issued = CertificateAuthority().issue(SECRET_CN, ["secure.example.com"])
    (folder / "shapes.yaml").write_text(SHAPES.replace("CERT", _indent(issued.cert_pem))
                                        .replace("KEY", _indent(issued.key_pem)))
    cluster = load_manifests([folder])
    network = LabNetwork(cluster, lb_profile="fast")
    with network:
        yield network
        pids = [p.proc.pid for p in network.proxies.running.values()]
        workers = [w for p in network.proxies.running.values() for w in p.workers]
    # Nothing the proxies ran outlives the network: NGINX masters and workers, HAProxy, killed by pid.
    left = [pid for pid in pids + workers + network_haproxy_pids if os.path.exists(f"/proc/{pid}")
            and open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].split(b":")[0] in (b"nginx", b"haproxy")]
    assert not left, f"still running after teardown: {left}"


network_haproxy_pids: list[int] = []


def controller(lab):
    return lab.cluster.service("ingress-nginx-controller", "ingress-nginx")


def _port(service, name: str) -> int:
    return next(sp.node_port for sp in service.ports if sp.name == name)


def get(lab, node: str, host: str, path: str = "/", tls: bool = False, requests: int = 4, target=None) -> list[dict]:
    service = controller(lab)
    target = target or f"{addr.node_ip(lab.cluster.node(node).index)}:{_port(service, 'https' if tls else 'http')}"
    return lab.probe([target], requests, timeout=3, path=path, http_host=host, tls=tls)["records"]


def served_apps(records: list[dict]) -> set[str]:
    return {r["response"]["pod"].split("-")[0] for r in records if isinstance(r.get("response"), dict)}


def statuses(records: list[dict]) -> set[int | None]:
    return {r["status"] for r in records}


def test_hosts_and_paths_route_as_the_specification_says(lab):
    assert served_apps(get(lab, "node-a", "blog.example.com")) == {"blog"}
    assert served_apps(get(lab, "node-a", "paths.example.com", "/app/x")) == {"blog"}  # Prefix by segment
    assert served_apps(get(lab, "node-a", "paths.example.com", "/app/admin")) == {"shop"}  # Exact over Prefix
    assert served_apps(get(lab, "node-a", "paths.example.com", "/app/admin/x")) == {"blog"}
    assert statuses(get(lab, "node-a", "paths.example.com", "/appx")) == {404}  # not a segment of /app
    assert statuses(get(lab, "node-a", "nowhere.example.com", "/")) == {404}


def test_an_ingress_for_a_missing_service_answers_503(lab):
    assert statuses(get(lab, "node-b", "paths.example.com", "/gone")) == {503}


def test_a_pod_that_is_not_ready_gets_no_request_from_nginx(lab):
    """ingress-nginx proxies to ready endpoints only: once a shop pod is not Ready, NGINX is reloaded without it
    (it keeps serving for kube-proxy's fallback, but NGINX has no such fallback); Ready again, it is back."""
    shop = lab.cluster.service("shop")
    pods = [p.name for p in lab.cluster.pods if all(p.labels.get(k) == v for k, v in shop.selector.items())]
    assert len(pods) == 2

    def served(requests: int = 20) -> Counter:
        return Counter(r["response"]["pod"] for r in get(lab, "node-a", "shop.example.com", tls=True,
                                                             requests=requests)
                       if isinstance(r.get("response"), dict))

    assert set(served()) == set(pods)
    lab.set_pod_ready(pods[0], False)
    try:
        assert served() == Counter({pods[1]: 20})
    finally:
        lab.set_pod_ready(pods[0], True)
    assert set(served()) == set(pods)


def test_tls_redirects_and_presents_the_certificate_for_each_name(lab):
    plain = get(lab, "node-a", "shop.example.com", "/cart")
    assert statuses(plain) == {308} and {r["location"] for r in plain} == {"https://shop.example.com/cart"}
    secure = get(lab, "node-a", "shop.example.com", "/", tls=True)
    assert served_apps(secure) == {"shop"} and {r["certificate"] for r in secure} == {"shop.example.com"}
    assert {r["certificate"] for r in get(lab, "node-a", "secure.example.com", tls=True)} == {SECRET_CN}
    assert {r["certificate"] for r in get(lab, "node-a", "other.example.org", tls=True)} == {FAKE_CERTIFICATE_CN}


def _forwarded_for(records: list[dict]) -> set[str]:
    return {r["response"]["headers"].get("x-forwarded-for") for r in records if isinstance(r.get("response"), dict)}


def test_the_client_ip_reaches_the_app_only_when_the_l4_hop_keeps_it(lab):
    node_addresses = {addr.node_ip(n.index) for n in lab.cluster.nodes} | \
        {addr.pod_gateway_ip(n.index) for n in lab.cluster.nodes}
    assert _forwarded_for(get(lab, "node-a", "blog.example.com")) == {addr.CLIENT_IP}  # Local
    service = controller(lab)
    set_policy(lab, service, "Cluster")
    try:
        cluster_xff = _forwarded_for(get(lab, "node-c", "blog.example.com", requests=8))
        assert cluster_xff and cluster_xff <= node_addresses, cluster_xff
    finally:
        set_policy(lab, service, "Local")
    lab.set_lb_mode(PROXY_PROTOCOL)
    try:
        network_haproxy_pids.append(lab.proxy_lb.proc.pid)
        through_lb = get(lab, "", "blog.example.com", requests=8, target=f"{lab.ingress_entry_lb}:80")
        assert _forwarded_for(through_lb) == {addr.CLIENT_IP}
        assert {r["response"]["source"]["ip"] for r in through_lb} <= {p.ip for p in lab.cluster.pods
                                                                         if p.namespace == "ingress-nginx"}
        # NGINX now wants the PROXY header first: a client that connects directly gets no HTTP answer.
        assert statuses(get(lab, "node-a", "blog.example.com")) == {None}
    finally:
        lab.set_lb_mode(PASS_THROUGH)
    assert statuses(get(lab, "node-a", "blog.example.com")) == {200}


def test_http_route_weights_split_requests_90_10(lab):
    gateway = lab.cluster.service("web-nginx")
    target = f"{addr.node_ip(lab.cluster.node('node-c').index)}:{gateway.ports[0].node_port}"
    records = lab.probe([target], 600, timeout=3, http_host="shop.example.com")["records"]
    apps = Counter("canary" if "canary" in r["response"]["pod"] else "stable" for r in records if r["status"] == 200)
    assert sum(apps.values()) == 600
    observed = [apps["stable"], apps["canary"]]
    assert chi_square(observed, [0.9, 0.1])[1] > FIT_P, observed
    assert chi_square(observed, [0.5, 0.5])[1] < FIT_P, observed  # the test can tell a wrong split


def test_an_http_route_redirect_answers_with_its_location(lab):
    """RequestRedirect: NGINX answers 301 itself, Location on the given host with the request's path."""
    gateway = lab.cluster.service("web-nginx")
    target = f"{addr.node_ip(lab.cluster.node('node-c').index)}:{gateway.ports[0].node_port}"
    records = lab.probe([target], 5, timeout=3, path="/cart?item=7", http_host="old.example.com")["records"]
    assert {(r["status"], r.get("location")) for r in records} == {(301, "http://shop.example.com/cart?item=7")}


def test_service_upstream_sends_to_the_cluster_ip_and_kube_proxy_picks_the_pod(lab):
    lab.proxies.upstream = "service"
    lab.proxies.sync()
    try:
        config = next(iter(lab.proxies.running.values())).config
        from lab.kube.cluster_ips import cluster_ips
        assert f"server {cluster_ips(lab.cluster)[('default', 'blog')]}:80;" in config
        assert served_apps(get(lab, "node-a", "blog.example.com", requests=6)) == {"blog"}
    finally:
        lab.proxies.upstream = "endpoints"
        lab.proxies.sync()
