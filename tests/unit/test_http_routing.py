"""Ingress and HTTPRoute routing decisions: the specifications' examples, and NGINX's locations agreeing."""

from __future__ import annotations

import itertools

import pytest

from lab.kube.gateway import (
    Gateway,
    GatewayListener,
    HTTPRoute,
    ParentRef,
    RouteMatch,
    RouteRule,
    intersect_hostname,
    listener_hosts,
    route_statuses,
)
from lab.kube.http_routing import (
    EXACT,
    PREFIX,
    SUFFIX,
    BackendRef,
    Match,
    VirtualHost,
    host_matches,
    normalise_path,
    route,
)
from lab.kube.http_routing import nginx_location as nginx_choice
from lab.kube.ingress import Ingress, IngressClass, IngressPath, IngressRule, IngressTLS, class_of, virtual_hosts

A, B, C, D = (BackendRef(name, 80) for name in "abcd")


def _vhost(*matches: tuple[str, str, BackendRef]) -> VirtualHost:
    return VirtualHost("", [Match(t, p, (b,), order=i) for i, (t, p, b) in enumerate(matches)])


# The table of the Kubernetes Ingress docs ("Examples"), one row per (rules, request, matches?).
DOC_TABLE = [
    ((PREFIX, "/"), "/", True), ((PREFIX, "/"), "/foo", True),
    ((EXACT, "/foo"), "/foo", True), ((EXACT, "/foo"), "/bar", False),
    ((EXACT, "/foo"), "/foo/", False), ((EXACT, "/foo/"), "/foo", False),
    ((PREFIX, "/foo"), "/foo", True), ((PREFIX, "/foo"), "/foo/", True),
    ((PREFIX, "/foo/"), "/foo", True), ((PREFIX, "/foo/"), "/foo/", True),
    ((PREFIX, "/aaa/bb"), "/aaa/bbb", False), ((PREFIX, "/aaa/bbb"), "/aaa/bbb", True),
    ((PREFIX, "/aaa/bbb/"), "/aaa/bbb", True), ((PREFIX, "/aaa/bbb"), "/aaa/bbb/", True),
    ((PREFIX, "/aaa/bbb"), "/aaa/bbb/ccc", True), ((PREFIX, "/aaa/bbb"), "/aaa/bbbxyz", False),
]


@pytest.mark.parametrize(("rule", "request_path", "matches"), DOC_TABLE)
def test_path_types_follow_the_ingress_docs_table(rule, request_path, matches):
    vhost = VirtualHost("", [Match(rule[0], normalise_path(rule[0], rule[1]), (A,))])
    assert (route([vhost], "x", request_path).backends == (A,)) is matches


def test_longest_path_wins_then_exact_over_prefix():
    vhost = _vhost((PREFIX, "/", A), (PREFIX, "/aaa", B), (PREFIX, "/aaa/bbb", C), (EXACT, "/aaa", D))
    assert route([vhost], "x", "/aaa/bbb/c").backends == (C,)
    assert route([vhost], "x", "/aaa/x").backends == (B,)
    assert route([vhost], "x", "/aaa").backends == (D,)
    assert route([vhost], "x", "/zzz").backends == (A,)


def test_unmatched_path_goes_to_the_fallback_or_404():
    vhost = _vhost((EXACT, "/only", A))
    assert route([vhost], "x", "/other").status == 404
    vhost.fallback = (B,)
    assert route([vhost], "x", "/other").backends == (B,)


def test_ingress_wildcard_is_exactly_one_label_and_gateway_wildcard_a_suffix():
    assert host_matches("*.foo.com", "bar.foo.com")
    assert not host_matches("*.foo.com", "baz.bar.foo.com")
    assert not host_matches("*.foo.com", "foo.com")
    assert host_matches("*.foo.com", "baz.bar.foo.com", SUFFIX)
    assert host_matches("Foo.COM", "foo.com:8080")


def test_exact_host_beats_wildcard_beats_catch_all():
    vhosts = [VirtualHost("", [Match(PREFIX, "/", (A,))]), VirtualHost("*.foo.com", [Match(PREFIX, "/", (B,))]),
              VirtualHost("a.foo.com", [Match(PREFIX, "/", (C,))])]
    assert route(vhosts, "a.foo.com", "/").backends == (C,)
    assert route(vhosts, "b.foo.com", "/").backends == (B,)
    assert route(vhosts, "other.org", "/").backends == (A,)


PATHS = ["/", "/a", "/a/", "/a/b", "/a/bc", "/ab", "/a/b/c", "/b", "/b/a", "/a/b/"]
SHAPES = [(PREFIX, "/"), (PREFIX, "/a"), (EXACT, "/a"), (PREFIX, "/a/b"), (EXACT, "/a/b"),
          ("ImplementationSpecific", "/a/b"), ("ImplementationSpecific", "/ab"), (EXACT, "/b")]


@pytest.mark.parametrize("size", [1, 2, 3])
def test_nginx_locations_route_every_request_as_the_specification(size):
    """For every combination of rule shapes, NGINX's location choice then the first fitting match is
    exactly the specification's answer, for every request path."""
    backends = [BackendRef(f"s{i}", 80) for i in range(len(SHAPES))]
    for combo in itertools.combinations(range(len(SHAPES)), size):
        vhost = VirtualHost("", [Match(SHAPES[i][0], SHAPES[i][1], (backends[i],), order=n)
                                 for n, i in enumerate(combo)])
        for path in PATHS:
            expected = route([vhost], "x", path)
            loc = nginx_choice(vhost, path)
            got = loc.matches[0].backends if loc and loc.matches else vhost.fallback
            assert got == expected.backends, (combo, path)


def test_headers_narrow_a_match_and_more_headers_win():
    vhost = VirtualHost("", [Match(PREFIX, "/", (A,)), Match(PREFIX, "/", (B,), headers=(("x-env", "canary"),)),
                             Match(PREFIX, "/", (C,), headers=(("x-env", "canary"), ("x-user", "me")))])
    assert route([vhost], "h", "/", {}).backends == (A,)
    assert route([vhost], "h", "/", {"X-Env": "canary"}).backends == (B,)
    assert route([vhost], "h", "/", {"x-env": "canary", "x-user": "me"}).backends == (C,)


def test_a_redirect_match_decides_the_status_and_an_unmatched_request_404():
    from lab.kube.http_routing import Redirect

    vhost = VirtualHost("", [Match(PREFIX, "/old", (), redirect=Redirect(301, "https")), Match(PREFIX, "/", (A,))])
    assert route([vhost], "h", "/old/page").status == 301
    assert route([vhost], "h", "/new").status is None  # a backend answers
    assert route([VirtualHost("shop")], "shop", "/").status == 404


def _ingress(name, order=0, **kw):
    return Ingress(name=name, order=order, **kw)


def test_ingresses_merge_per_host_and_tls_hosts_redirect():
    one = _ingress("one", rules=[IngressRule("shop.example", (IngressPath("/", PREFIX, A),))],
                   tls=[IngressTLS(("shop.example",), "shop-tls")], default_backend=D)
    two = _ingress("two", 1, rules=[IngressRule("shop.example", (IngressPath("/api", PREFIX, B),)),
                                    IngressRule(None, (IngressPath("/", PREFIX, C),))])
    vhosts = {v.host: v for v in virtual_hosts([one, two])}
    assert route(list(vhosts.values()), "shop.example", "/api/x").backends == (B,)
    assert vhosts["shop.example"].tls and vhosts["shop.example"].tls_secret == "default/shop-tls"
    assert route(list(vhosts.values()), "else.example", "/").backends == (C,)
    assert vhosts[""].fallback == (D,)


def test_class_of_uses_the_name_then_the_single_default():
    nginx = IngressClass("nginx", "k8s.io/ingress-nginx", default=True)
    other = IngressClass("other", "example.com/other")
    assert class_of(_ingress("a", class_name="other"), [nginx, other]) is other
    assert class_of(_ingress("a"), [nginx, other]) is nginx
    assert class_of(_ingress("a", class_name="missing"), [nginx]) is None
    assert class_of(_ingress("a"), [other]) is None


def test_route_hostnames_intersect_listener_hostnames():
    assert intersect_hostname("a.example.com", "*.example.com") == "a.example.com"
    assert intersect_hostname("*.example.com", "a.example.com") == "a.example.com"
    assert intersect_hostname("a.example.org", "*.example.com") is None
    assert intersect_hostname(None, None) == ""


def _gateway():
    return Gateway("gw", listeners=[GatewayListener("http", "HTTP", 80),
                                    GatewayListener("shop", "HTTPS", 443, "shop.example", ("shop-tls",))])


def test_route_status_reasons():
    exists = lambda ref: ref.service != "missing"  # noqa: E731
    rule = RouteRule((RouteMatch(),), (A,))
    routes = [
        HTTPRoute("ok", parents=[ParentRef("gw")], rules=[rule]),
        HTTPRoute("nogw", parents=[ParentRef("none")], rules=[rule]),
        HTTPRoute("otherns", namespace="team", parents=[ParentRef("gw", "default")], rules=[rule]),
        HTTPRoute("host", parents=[ParentRef("gw", section="shop")], hostnames=["other.example"], rules=[rule]),
        HTTPRoute("dangling", parents=[ParentRef("gw")],
                  rules=[RouteRule((RouteMatch(),), (BackendRef("missing", 80),))]),
        HTTPRoute("custom", parents=[ParentRef("gw")],
                  rules=[RouteRule((RouteMatch(),), (BackendRef("thing", 8080, kind="acme.io/CustomBackend"),))]),
    ]
    reasons = {name: [(c.type, c.status, c.reason) for c in statuses[0].conditions]
               for name, statuses in route_statuses(routes, [_gateway()], exists).items()}
    assert reasons["default/ok"] == [("Accepted", "True", "Accepted"), ("ResolvedRefs", "True", "ResolvedRefs")]
    assert reasons["default/nogw"][0] == ("Accepted", "False", "NoMatchingParent")
    assert reasons["team/otherns"][0] == ("Accepted", "False", "NotAllowedByListeners")
    assert reasons["default/host"][0] == ("Accepted", "False", "NoMatchingListenerHostname")
    assert reasons["default/dangling"] == [("Accepted", "True", "Accepted"),
                                           ("ResolvedRefs", "False", "BackendNotFound")]
    assert reasons["default/custom"] == [("Accepted", "True", "Accepted"), ("ResolvedRefs", "False", "InvalidKind")]


def test_attached_routes_fill_each_listeners_table():
    weighted = (BackendRef("a", 80, weight=90), BackendRef("b", 80, weight=10))
    routes = [HTTPRoute("shop", parents=[ParentRef("gw")], hostnames=["shop.example"],
                        rules=[RouteRule((RouteMatch(PREFIX, "/"),), weighted)])]
    tables = listener_hosts(_gateway(), routes, lambda ref: True)
    assert [v.host for v in tables["http"]] == ["shop.example"]
    shop = tables["shop"][0]
    assert shop.tls_secret == "default/shop-tls"
    assert route(tables["shop"], "shop.example", "/x").backends == weighted
