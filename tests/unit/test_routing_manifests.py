"""Ingress, IngressClass, Secret and Gateway API objects from YAML: what is read, what is refused (one line
naming object, field and fix), what is warned about, and what the lab adds."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from lab.errors import ManifestError
from lab.ingress.certificates import CertificateAuthority
from lab.kube.http_routing import BackendRef
from lab.kube.l7_proxies import proxy_pods
from lab.kube.manifests import load_manifests

REPO = Path(__file__).resolve().parents[2]
NODES = (REPO / "examples/ingress/nodes.yaml").read_text()


def _load(tmp_path: Path, text: str):
    (tmp_path / "nodes.yaml").write_text(NODES)
    (tmp_path / "objects.yaml").write_text(text)
    return load_manifests([tmp_path])


def _ingress(spec: str) -> str:
    return f"apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web}}\nspec:\n{spec}\n"


def test_the_example_has_its_controller_pods_and_the_gateways_data_plane():
    cluster = load_manifests([REPO / "examples/ingress"])
    roles = proxy_pods(cluster)
    ingress_nodes = sorted(cluster.pod(name).node for name, role in roles.items() if role.kind == "ingress")
    assert ingress_nodes == ["node-a", "node-b"]
    gateway_pods = [name for name, role in roles.items() if role.kind == "gateway"]
    assert len(gateway_pods) == 1 and cluster.service("web-nginx").type == "LoadBalancer"
    assert cluster.ingresses[0].tls[0].hosts == ("shop.example.com",)
    assert cluster.http_routes[0].rules[0].backends == (BackendRef("shop", 80, weight=90),
                                                        BackendRef("shop-canary", 80, weight=10))


def test_ingresses_without_a_controller_get_ingress_nginx_from_its_cloud_manifest(tmp_path):
    cluster = _load(tmp_path, _ingress("  defaultBackend: {service: {name: web, port: {number: 80}}}"))
    controller = cluster.service("ingress-nginx-controller", "ingress-nginx")
    assert (controller.type, controller.external_traffic_policy) == ("LoadBalancer", "Local")
    assert [c.name for c in cluster.ingress_classes] == ["nginx"] and cluster.ingress_classes[0].default
    assert any("no ingress controller: the lab adds ingress-nginx" in w for w in cluster.warnings)
    assert len(proxy_pods(cluster)) == 1


@pytest.mark.parametrize(("spec", "message"), [
    ("  rules: [{http: {paths: [{path: /, backend: {service: {name: a, port: {number: 80}}}}]}}]",
     r'Ingress "web" \(.*\): spec.rules\[0\].http.paths\[0\].pathType is required: use Exact, Prefix or '),
    ("  rules: [{http: {paths: [{path: x, pathType: Prefix, backend: {service: {name: a, port: {number: 80}}}}]}}]",
     r'paths\[0\].path "x" is not an absolute path: start it with /'),
    ("  rules: [{http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, "
     "port: {number: 80, name: http}}}}]}}]", r"service.port needs exactly one of number or name"),
    ("  rules: [{host: 10.0.0.1, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, "
     "port: {number: 80}}}}]}}]", r'host "10.0.0.1" is an IP address'),
    ("  ingressClassName: nginx", r"spec has neither rules nor defaultBackend"),
])
def test_invalid_ingresses_are_refused_in_one_line(tmp_path, spec, message):
    with pytest.raises(ManifestError, match=message) as info:
        _load(tmp_path, _ingress(spec))
    assert "\n" not in str(info.value)


def test_a_tls_secret_is_read_and_other_secrets_are_warned_about(tmp_path):
    issued = CertificateAuthority().issue("shop.example.com", ["shop.example.com"])
    crt, key = (base64.b64encode(v.encode()).decode() for v in (issued.cert_pem, issued.key_pem))
    cluster = _load(tmp_path, f"""apiVersion: v1
kind: Secret
metadata: {{name: shop-tls}}
type: kubernetes.io/tls
data: {{tls.crt: {crt}, tls.key: {key}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: password}}
stringData: {{password: hunter2}}
""")
    assert [s.name for s in cluster.tls_secrets] == ["shop-tls"]
    assert "BEGIN CERTIFICATE" in cluster.tls_secrets[0].cert_pem
    assert "ignored Secret/password of type Opaque" in " ".join(cluster.warnings)


GATEWAY = """apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web}}
spec:
  gatewayClassName: {cls}
  listeners: [{{name: http, protocol: {protocol}, port: 80}}]
"""


def test_gateway_errors_and_warnings(tmp_path):
    cluster = _load(tmp_path, GATEWAY.format(cls="nginx", protocol="example.com/SCTP"))  # the API takes any
    assert any('protocol "example.com/SCTP" is not modelled, so the lab leaves this listener out' in w
               for w in cluster.warnings)
    other_class = ("apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: nginx}\n"
                   "spec: {controllerName: gateway.nginx.org/nginx-gateway-controller}\n---\n")
    cluster = _load(tmp_path, other_class + GATEWAY.format(cls="missing", protocol="HTTP"))
    assert any("GatewayClass missing does not exist" in w for w in cluster.warnings)
    assert not proxy_pods(cluster)


def test_a_gateway_with_no_gateway_class_at_all_is_served_as_a_controllers_install_would(tmp_path):
    """Istio's bookinfo-gateway names class "istio", which Istio's install creates, not the app's manifests."""
    cluster = _load(tmp_path, GATEWAY.format(cls="istio", protocol="HTTP"))
    assert any("Gateway web: the manifests have no GatewayClass, so the lab adds istio" in w for w in cluster.warnings)
    assert [name.startswith("web-istio") for name in proxy_pods(cluster)] == [True]


ROUTE = """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parentRefs: [{name: web}]
  rules:
"""


def test_unmodelled_route_fields_are_warned_about(tmp_path):
    cluster = _load(tmp_path, ROUTE + """    - matches: [{path: {type: PathPrefix, value: /}, method: GET}]
      filters: [{type: RequestHeaderModifier}]
      backendRefs: [{name: a, port: 80}]
""")
    text = " ".join(cluster.warnings)
    assert 'spec.rules[0].filters[0].type "RequestHeaderModifier" is not modelled' in text
    assert "matches[0].method is not modelled" in text


def test_regular_expression_matches_are_left_out_with_a_warning(tmp_path):
    """The API accepts them (implementation-specific); the lab cannot make a request a regex surely matches,
    so such a match takes no request, and a rule left with none is left out (no matches means every path)."""
    cluster = _load(tmp_path, ROUTE + """    - matches:
        - {path: {type: PathPrefix, value: /coffee}, headers: [{type: RegularExpression, name: v, value: "v[23]"}]}
        - {path: {type: Exact, value: /latte}}
      backendRefs: [{name: a, port: 80}]
    - matches: [{path: {type: RegularExpression, value: "/tea/[0-9]+"}}]
      backendRefs: [{name: b, port: 80}]
    - backendRefs: [{name: c, port: 80}]
""")
    rules = cluster.http_routes[0].rules
    assert [(r.backends[0].service, [(m.path_type, m.path) for m in r.matches]) for r in rules] == [
        ("a", [("Exact", "/latte")]), ("c", [])]
    text = " ".join(cluster.warnings)
    assert "spec.rules[0].matches[0].headers[0].type RegularExpression is not modelled, so the lab leaves" in text
    assert "spec.rules[1].matches[0].path.type RegularExpression is not modelled" in text
    with pytest.raises(ManifestError, match=r'headers\[0\]\.type "Regex" is not a header match type'):
        _load(tmp_path, """apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  rules: [{matches: [{headers: [{type: Regex, name: v, value: x}]}], backendRefs: [{name: a, port: 80}]}]
""")


def test_a_backend_ref_of_another_kind_resolves_to_nothing_with_a_warning(tmp_path):
    """The API accepts any group/kind; the controller answers its requests with 500 (InvalidKind)."""
    custom = "    - backendRefs: [{group: acme.io, kind: CustomBackend, name: thing, port: 8080}]\n"
    cluster = _load(tmp_path, ROUTE + custom)
    [rule] = cluster.http_routes[0].rules
    assert rule.backends == (BackendRef("thing", 8080, kind="acme.io/CustomBackend"),)
    assert any('backendRefs[0].kind "acme.io/CustomBackend" is not a Service, so the lab resolves it to nothing'
               in w for w in cluster.warnings)
    with pytest.raises(ManifestError, match=r"backendRefs\[0\]\.port is required for a Service"):
        _load(tmp_path, ROUTE + "    - backendRefs: [{name: a}]\n")


SELECTING = """apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {gateway-access: "true"}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: nginx}
spec: {controllerName: gateway.nginx.org/nginx-gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shared, namespace: infra}
spec:
  gatewayClassName: nginx
  listeners:
    - {name: tcp, protocol: TCP, port: 5432}
    - name: http
      protocol: HTTP
      port: 80
      allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {gateway-access: "true"}}}}
    - name: blog
      protocol: HTTP
      port: 8080
      allowedRoutes:
        namespaces:
          from: Selector
          selector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [blog]}]}
"""


def _route_in(namespace: str) -> str:
    return f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: {namespace}}}
spec:
  parentRefs: [{{name: shared, namespace: infra}}]
  rules: [{{backendRefs: [{{name: a, port: 80}}]}}]
"""


def test_a_listener_selects_route_namespaces_by_label_and_a_tcp_listener_is_left_out(tmp_path):
    """allowedRoutes from Selector: the namespaces whose labels match, kubernetes.io/metadata.name included
    (every namespace has it, with or without a Namespace object); a TCP listener warns and serves nothing."""
    from lab.measure.routes import http_route_statuses

    cluster = _load(tmp_path, SELECTING + _route_in("shop") + _route_in("blog") + _route_in("other"))
    [gateway] = cluster.gateways
    assert [lst.name for lst in gateway.listeners] == ["http", "blog"]
    assert any('spec.listeners[0].protocol "TCP" is not modelled, so the lab leaves this listener out' in w
               for w in cluster.warnings)
    accepted = {s["route"]: [c["reason"] for p in s["parents"] for c in p["conditions"] if c["type"] == "Accepted"]
                for s in http_route_statuses(cluster)}
    assert accepted == {"shop/r": ["Accepted"], "blog/r": ["Accepted"], "other/r": ["NotAllowedByListeners"]}
    with pytest.raises(ManifestError, match=r"allowedRoutes\.namespaces\.selector is required when from is Selector"):
        _load(tmp_path, SELECTING.replace(", selector: {matchLabels: {gateway-access: \"true\"}}", ""))


def test_a_gateway_with_no_http_listener_left_is_not_provisioned(tmp_path):
    only_tcp = SELECTING.split("    - name: http\n")[0]
    cluster = _load(tmp_path, only_tcp)
    assert not proxy_pods(cluster)
    assert any("Gateway infra/shared: no HTTP or HTTPS listener is left, so the lab provisions nothing" in w
               for w in cluster.warnings)


def test_ingress_nginx_annotations_the_lab_does_not_model_are_named_in_one_line(tmp_path):
    """rewrite-target, canary, affinity...: each changes what a real ingress-nginx does, so none passes
    silently; service-upstream, which the lab honours, is not named."""
    annotated = _ingress("  rules: [{http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: a, port: "
                         "{number: 80}}}}]}}]").replace(
        "metadata: {name: web}", "metadata:\n  name: web\n  annotations:\n"
        "    nginx.ingress.kubernetes.io/rewrite-target: /$2\n    nginx.ingress.kubernetes.io/canary: 'true'\n"
        "    nginx.ingress.kubernetes.io/service-upstream: 'true'")
    cluster = _load(tmp_path, annotated)
    [line] = [w for w in cluster.warnings if "annotations" in w]
    assert ('metadata.annotations [nginx.ingress.kubernetes.io/rewrite-target] "/$2", '
            '[nginx.ingress.kubernetes.io/canary] "true" are not honoured by the lab') in line
    assert "service-upstream" not in line and cluster.ingresses[0].service_upstream


def test_a_request_redirect_filter_is_read(tmp_path):
    """Gateway API's usual HTTP-to-HTTPS rule; its path rewrite is not modelled and says so."""
    from lab.kube.http_routing import Redirect

    cluster = _load(tmp_path, ROUTE + """    - filters:
        - {type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 301, path: {type: ReplaceFullPath}}}
    - filters: [{type: RequestRedirect, requestRedirect: {hostname: new.example.com, port: 8443}}]
      backendRefs: [{name: a, port: 80}]
""")
    assert [r.redirect for r in cluster.http_routes[0].rules] == [Redirect(301, "https"),
                                                                  Redirect(302, None, "new.example.com", 8443)]
    assert any("spec.rules[0].filters[0].requestRedirect.path is not modelled, so the redirect keeps the request's "
               "path" in w for w in cluster.warnings)
    for bad, message in (("statusCode: 304", "statusCode 304 is not a redirect code"),
                         ("scheme: ftp", 'scheme "ftp" is not a scheme')):
        with pytest.raises(ManifestError, match=message):
            _load(tmp_path, ROUTE + f"    - filters: [{{type: RequestRedirect, requestRedirect: {{{bad}}}}}]\n")
