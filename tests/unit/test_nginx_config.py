"""The NGINX configuration for each rule shape: the locations and servers it must hold, and NGINX's own
verdict on it (``nginx -t`` against a configuration in a temporary prefix; no port is bound)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lab.ingress.certificates import CertificateAuthority
from lab.ingress.nginx import render
from lab.ingress.site import SERVICE, gateway_table, ingress_table, site, tls_hosts
from lab.kube.endpoints import leads_to_l7_proxy
from lab.kube.l7_proxies import proxy_pods
from lab.kube.manifests import load_manifests

REPO = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
needs_nginx = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed: run ./setup.sh")

# The example's nodes, apps (behind ClusterIP Services) and controller.
BASE = ["nodes.yaml", "apps.yaml", "ingress-nginx.yaml"]


def _ingress(spec: str, name: str = "shape") -> str:
    return f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}}}\nspec:\n{spec}\n"


def _cluster(tmp_path: Path, *documents: str):
    for name in BASE:
        shutil.copy(REPO / "examples/ingress" / name, tmp_path / name)
    (tmp_path / "objects.yaml").write_text("\n---\n".join(documents))
    return load_manifests([tmp_path])


def _render(cluster, tmp_path: Path, table, proxy_protocol: bool = False) -> str:
    ca = CertificateAuthority()
    certs = {}
    for number, host in enumerate(tls_hosts(table)):
        issued = ca.issue(host, [host])
        certs[host] = _write_pair(tmp_path, f"host{number}", issued.cert_pem, issued.key_pem)
    fake = ca.issue("Kubernetes Ingress Controller Fake Certificate", [])
    default = _write_pair(tmp_path, "default", fake.cert_pem, fake.key_pem)
    text = render(site(cluster, table, "test proxy", str(tmp_path), certs, default, proxy_protocol))
    (tmp_path / "nginx.conf").write_text(text)
    return text


def _write_pair(tmp_path: Path, name: str, cert: str, key: str) -> tuple[str, str]:
    (tmp_path / f"{name}.crt").write_text(cert)
    (tmp_path / f"{name}.key").write_text(key)
    return str(tmp_path / f"{name}.crt"), str(tmp_path / f"{name}.key")


def _nginx_t(tmp_path: Path) -> None:
    result = subprocess.run([NGINX, "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                             "-e", str(tmp_path / "error.log")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr + (tmp_path / "nginx.conf").read_text()


def _ingress_config(tmp_path: Path, spec: str, proxy_protocol: bool = False, upstream: str = "endpoints") -> str:
    cluster = _cluster(tmp_path, _ingress(spec))
    role = next(iter(proxy_pods(cluster).values()))
    return _render(cluster, tmp_path, ingress_table(cluster, role, upstream), proxy_protocol)


def _backend(service: str = "shop") -> str:
    return f"backend: {{service: {{name: {service}, port: {{number: 80}}}}}}"


SHAPES = {
    "prefix": (f"  rules: [{{host: shop.example.com, http: {{paths: [{{path: /cart, pathType: Prefix, "
               f"{_backend()}}}]}}}}]",
               ["server_name shop.example.com;", "location = /cart {", "location /cart/ {"]),
    "exact": (f"  rules: [{{http: {{paths: [{{path: /login, pathType: Exact, {_backend()}}}]}}}}]",
              ["location = /login {", "server_name _;", "listen 80 default_server;"]),
    "implementation-specific": (
        f"  rules: [{{http: {{paths: [{{path: /static, pathType: ImplementationSpecific, {_backend()}}}]}}}}]",
        ["location /static {"]),
    "wildcard": (f"  rules: [{{host: '*.example.com', http: {{paths: [{{path: /, pathType: Prefix, "
                 f"{_backend()}}}]}}}}]",
                 [r"server_name ~^[^.]+\.example\.com$;"]),
    "default-backend": ("  defaultBackend: {service: {name: blog, port: {number: 80}}}",
                        ["set $lab_upstream lab_default_blog_80;"]),
    "tls": (f"  tls: [{{hosts: [shop.example.com]}}]\n"
            f"  rules: [{{host: shop.example.com, http: {{paths: [{{path: /, pathType: Prefix, {_backend()}}}]}}}}]",
            ["return 308 https://$host$request_uri;", "listen 443 ssl;", "ssl_certificate "]),
    "missing-service": (f"  rules: [{{http: {{paths: [{{path: /, pathType: Prefix, {_backend('gone')}}}]}}}}]",
                        ["set $lab_upstream lab_status_503;", "return 503;"]),
}


@needs_nginx
@pytest.mark.parametrize("shape", SHAPES)
def test_each_ingress_rule_shape_renders_a_configuration_nginx_accepts(tmp_path, shape):
    spec, expected = SHAPES[shape]
    text = _ingress_config(tmp_path, spec)
    for line in expected:
        assert line in text, f"{line!r} missing from:\n{text}"
    _nginx_t(tmp_path)


def test_upstreams_are_the_services_endpoints(tmp_path):
    text = _ingress_config(tmp_path, SHAPES["prefix"][0])
    cluster = load_manifests([tmp_path])
    shop = sorted(f"{p.ip}:8080" for p in cluster.pods if p.labels.get("track") == "stable")
    block = text.split("upstream lab_default_shop_80 {", 1)[1].split("}", 1)[0]
    assert sorted(line.strip().removeprefix("server ").removesuffix(";") for line in block.strip().splitlines()) \
        == shop


def test_upstreams_leave_out_endpoints_that_are_not_ready(tmp_path):
    """ingress-nginx's getEndpointsFromSlices skips an endpoint whose ready condition is false: a pod failing
    its readiness probe or terminating gets no request from NGINX, and a backend with none answers 503."""
    cluster = _cluster(tmp_path, _ingress(SHAPES["prefix"][0]))
    role = next(iter(proxy_pods(cluster).values()))
    shop = [p for p in cluster.pods if p.labels.get("track") == "stable"]
    assert len(shop) >= 2
    shop[0].ready = False
    text = _render(cluster, tmp_path, ingress_table(cluster, role))
    block = text.split("upstream lab_default_shop_80 {", 1)[1].split("}", 1)[0]
    assert sorted(line.strip().removeprefix("server ").removesuffix(";") for line in block.strip().splitlines()) \
        == sorted(f"{p.ip}:8080" for p in shop[1:])
    for pod in shop[1:]:
        pod.terminating = True
    text = _render(cluster, tmp_path, ingress_table(cluster, role))
    assert "upstream lab_default_shop_80 {" not in text
    assert "set $lab_upstream lab_status_503;" in text


@needs_nginx
def test_proxy_protocol_listens_and_takes_the_client_address_from_it(tmp_path):
    text = _ingress_config(tmp_path, SHAPES["tls"][0], proxy_protocol=True)
    assert "listen 80 proxy_protocol;" in text and "real_ip_header proxy_protocol;" in text
    assert "listen 443 ssl default_server proxy_protocol;" in text
    _nginx_t(tmp_path)


def test_headers_are_the_ones_ingress_nginx_sets(tmp_path):
    text = _ingress_config(tmp_path, SHAPES["prefix"][0])
    for header in ("X-Real-IP $remote_addr", "X-Forwarded-For $remote_addr", "X-Forwarded-Host $host",
                   "X-Forwarded-Port $server_port", "X-Forwarded-Proto $scheme"):
        assert f"proxy_set_header {header};" in text


def test_service_upstream_proxies_to_the_cluster_ip(tmp_path):
    from lab.kube.cluster_ips import cluster_ips
    text = _ingress_config(tmp_path, SHAPES["prefix"][0], upstream=SERVICE)
    cluster = load_manifests([tmp_path])
    block = text.split("upstream lab_default_shop_80 {", 1)[1].split("}", 1)[0]
    assert block.split() == ["server", f"{cluster_ips(cluster)[('default', 'shop')]}:80;"]


GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: nginx}
spec: {controllerName: gateway.nginx.org/nginx-gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web}
spec:
  gatewayClassName: nginx
  listeners:
    - {name: http, protocol: HTTP, port: 80}
    - {name: https, protocol: HTTPS, port: 443, hostname: shop.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop}
spec:
  parentRefs: [{name: web}]
  hostnames: [shop.example.com]
  rules:
    - matches: [{path: {type: PathPrefix, value: /}, headers: [{name: X-Env, value: canary}]}]
      backendRefs: [{name: shop-canary, port: 80}]
    - matches: [{path: {type: Exact, value: /checkout}}]
      backendRefs: [{name: shop, port: 80}, {name: gone, port: 80}]
    - backendRefs: [{name: shop, port: 80, weight: 90}, {name: shop-canary, port: 80, weight: 10}]
"""


@needs_nginx
def test_an_http_route_with_headers_weights_and_a_missing_backend(tmp_path):
    cluster = _cluster(tmp_path, GATEWAY)
    text = _render(cluster, tmp_path, gateway_table(cluster, cluster.gateways[0]))
    assert 'map "$http_x_env" $lab_hdr_' in text
    assert "90.00% lab_default_shop_80;" in text and "* lab_default_shop_canary_80;" in text
    assert "lab_status_500" in text.split("location = /checkout {", 1)[1].split("}", 1)[0] or \
        "50.00% lab_default_shop_80;" in text
    assert "listen 443 ssl;" in text or "listen 443 ssl default_server;" in text
    _nginx_t(tmp_path)


@needs_nginx
def test_with_no_ingress_the_controller_listens_and_its_default_server_answers_404(tmp_path):
    """ingress-nginx's default server exists before any Ingress does (a fresh install answers 404)."""
    cluster = _cluster(tmp_path)
    assert not cluster.ingresses
    role = next(iter(proxy_pods(cluster).values()))
    text = _render(cluster, tmp_path, ingress_table(cluster, role))
    assert "listen 80 default_server;" in text and "listen 443 ssl default_server;" in text
    assert "set $lab_upstream lab_status_404;" in text
    _nginx_t(tmp_path)


@needs_nginx
def test_a_gateway_listener_without_routes_listens_and_answers_404(tmp_path):
    cluster = _cluster(tmp_path, GATEWAY.rsplit("---", 1)[0])
    assert not cluster.http_routes
    text = _render(cluster, tmp_path, gateway_table(cluster, cluster.gateways[0]))
    assert "listen 80 default_server;" in text and "listen 443 ssl default_server;" in text
    assert "set $lab_upstream lab_status_404;" in text
    _nginx_t(tmp_path)


def test_only_ports_that_lead_to_nginx_count_as_l7(tmp_path):
    cluster = _cluster(tmp_path)
    controller = cluster.service("ingress-nginx-controller", "ingress-nginx")
    assert all(leads_to_l7_proxy(cluster, controller, sp) for sp in controller.ports)
    shop = cluster.service("shop")
    assert not leads_to_l7_proxy(cluster, shop, shop.ports[0])


@needs_nginx
def test_a_request_redirect_answers_from_its_own_server_with_the_gateway_api_location(tmp_path):
    """The port follows the scheme given (none shown for https:443), else the listener's."""
    redirects = GATEWAY.rsplit("---", 1)[0] + """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: moves}
spec:
  parentRefs: [{name: web, sectionName: http}]
  hostnames: [old.example.com]
  rules:
    - filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301}}]
    - matches: [{path: {type: PathPrefix, value: /blog}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: blog.example.com}}]
"""
    cluster = _cluster(tmp_path, redirects)
    text = _render(cluster, tmp_path, gateway_table(cluster, cluster.gateways[0]))
    assert "return 301 https://$host$request_uri;" in text
    assert "return 302 http://blog.example.com$request_uri;" in text  # the listener's http:80: no port shown
    location = text.split("location /blog/ {", 1)[1].split("}", 1)[0]
    assert "set $lab_upstream lab_redirect_" in location
    _nginx_t(tmp_path)
