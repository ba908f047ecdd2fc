"""Where an L7 proxy sends one HTTP request: the routing table that Ingress and HTTPRoute objects compile to.

Both APIs reduce to the same shape, which is also the shape of an NGINX configuration: virtual hosts
(one per host name, plus a catch-all), each holding path matches with the backends they send to. A match
may carry header conditions and weighted backends (HTTPRoute); an Ingress path is a match without either.

Precedence, as both specifications define it (Ingress: ``networking.k8s.io/v1`` docs, "Multiple matches";
Gateway API: HTTPRoute rule precedence):

- host: an exact name first, then a wildcard, then the catch-all. An Ingress ``*.foo.com`` matches
  exactly one more label (``bar.foo.com``, not ``baz.bar.foo.com`` nor ``foo.com``); a Gateway API
  ``*.foo.com`` is a suffix match (one or more labels). Names compare case-insensitively, port stripped;
- path: Exact compares the whole path (case-sensitive); Prefix (Gateway: PathPrefix) compares ``/``
  separated elements, so ``/foo`` matches ``/foo``, ``/foo/`` and ``/foo/bar`` but not ``/foobar``, and a
  trailing slash in the rule is ignored; ImplementationSpecific is ingress-nginx's plain string prefix
  (NGINX ``location /foo``, without ``use-regex``);
- among matches: the longest path, Exact before Prefix at the same length, then the most header
  conditions, then the order the objects came in. An Exact match can never lose to a longer prefix (its
  length is the request's), so this one order is both specifications' order;
- nothing matches: the virtual host's fallback (an Ingress ``defaultBackend``) or none (404).

``route`` decides by the specification; ``locations`` lays the same table out as NGINX ``location``
blocks whose own matching rules (exact first, then longest string prefix) give the same answer, so the
configuration ``lab.ingress`` renders routes requests exactly as ``route`` says (checked in
tests/unit/test_http_routing.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXACT = "Exact"
PREFIX = "Prefix"  # Gateway API's PathPrefix is the same rule
IMPLEMENTATION_SPECIFIC = "ImplementationSpecific"
PATH_TYPES = (EXACT, PREFIX, IMPLEMENTATION_SPECIFIC)
CATCH_ALL = ""  # the virtual host for requests no host name claims (NGINX server_name "_")

ONE_LABEL = "one-label"  # Ingress wildcard semantics
SUFFIX = "suffix"  # Gateway API wildcard semantics


@dataclass(frozen=True)
class BackendRef:
    """A Service port to send to: an Ingress backend or an HTTPRoute backendRef (with its weight)."""

    service: str
    port: int | str  # a number, or the Service port's name
    namespace: str = "default"
    weight: int = 1
    kind: str = "Service"  # a backendRef's group/kind otherwise: it resolves to nothing (its requests get 500)

    @property
    def key(self) -> str:
        what = "" if self.kind == "Service" else f"{self.kind}/"
        return f"{self.namespace}/{what}{self.service}:{self.port}"


@dataclass(frozen=True)
class Redirect:
    """An HTTPRoute ``RequestRedirect`` filter: the proxy answers with a redirect instead of a backend.
    Empty fields keep the request's own (scheme and host; the port follows the scheme, see
    ``lab.ingress.nginx``)."""

    status: int = 302
    scheme: str | None = None
    hostname: str | None = None
    port: int | None = None


@dataclass(frozen=True)
class Match:
    """One path match and what it sends to; ``source`` names the object and rule it came from."""

    path_type: str
    path: str
    backends: tuple[BackendRef, ...]
    headers: tuple[tuple[str, str], ...] = ()  # (lower-case name, exact value), all must match
    source: str = ""
    order: int = 0  # creation order of the object, the last tie-breaker
    redirect: Redirect | None = None  # answered with this redirect, whatever the backends


@dataclass
class VirtualHost:
    host: str  # exact name, "*.suffix", or CATCH_ALL
    matches: list[Match] = field(default_factory=list)
    fallback: tuple[BackendRef, ...] = ()  # when no path matches; empty: 404
    tls_secret: str | None = None  # "namespace/name" of the certificate for this host, when TLS is on
    tls: bool = False  # plain HTTP is redirected to HTTPS (308), as ingress-nginx does for tls: hosts
    wildcard: str = ONE_LABEL


@dataclass(frozen=True)
class Decision:
    """Where one request goes: the virtual host, the match (None: fallback or 404) and the backends."""

    host: str
    match: Match | None
    backends: tuple[BackendRef, ...]

    @property
    def status(self) -> int | None:
        """The redirect's code, 404 when nothing serves the request; None when a backend does (its answer
        decides)."""
        if self.match is not None and self.match.redirect is not None:
            return self.match.redirect.status
        return None if self.backends else 404


def normalise_path(path_type: str, path: str) -> str:
    """Prefix paths lose their trailing slash (``/foo/`` and ``/foo`` are the same rule); ``/`` stays."""
    if path_type == PREFIX and path != "/":
        return path.rstrip("/") or "/"
    return path


def host_matches(pattern: str, host: str, wildcard: str = ONE_LABEL) -> bool:
    host = host.split(":", 1)[0].lower().rstrip(".")
    pattern = pattern.lower()
    if pattern == CATCH_ALL:
        return True
    if not pattern.startswith("*."):
        return host == pattern
    suffix = pattern[1:]  # ".foo.com"
    if not host.endswith(suffix) or len(host) == len(suffix):
        return False
    label = host[: -len(suffix)]
    return wildcard == SUFFIX or "." not in label


def path_matches(match: Match, path: str) -> bool:
    path = path.split("?", 1)[0]
    if match.path_type == EXACT:
        return path == match.path
    if match.path_type == IMPLEMENTATION_SPECIFIC:
        return path.startswith(match.path)
    return match.path == "/" or path == match.path or path.startswith(match.path + "/")


def _headers_match(match: Match, headers: dict[str, str]) -> bool:
    lower = {name.lower(): value for name, value in headers.items()}
    return all(lower.get(name) == value for name, value in match.headers)


def precedence(match: Match) -> tuple:
    """Sort key: the first match in this order that fits a request serves it."""
    return (-len(match.path), match.path_type != EXACT, -len(match.headers), match.order)


def select_host(vhosts: list[VirtualHost], host: str) -> VirtualHost | None:
    """Exact name, then the most specific wildcard, then the catch-all (NGINX's server_name order)."""
    exact = [v for v in vhosts if v.host and not v.host.startswith("*.") and host_matches(v.host, host)]
    if exact:
        return exact[0]
    wild = [v for v in vhosts if v.host.startswith("*.") and host_matches(v.host, host, v.wildcard)]
    if wild:
        return max(wild, key=lambda v: len(v.host))
    return next((v for v in vhosts if v.host == CATCH_ALL), None)


def route(vhosts: list[VirtualHost], host: str, path: str, headers: dict[str, str] | None = None) -> Decision:
    """The specification's answer for one request."""
    vhost = select_host(vhosts, host)
    if vhost is None:
        return Decision(CATCH_ALL, None, ())
    for match in sorted(vhost.matches, key=precedence):
        if path_matches(match, path) and _headers_match(match, headers or {}):
            return Decision(vhost.host, match, match.backends)
    return Decision(vhost.host, None, vhost.fallback)


# --- the same table as NGINX locations ------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """An NGINX ``location``: ``exact`` (``location = /p``) or a string prefix (``location /p``), with the
    matches that can serve requests reaching it, best first (NGINX picks the location, then the first of
    these whose headers fit)."""

    exact: bool
    path: str
    matches: tuple[Match, ...]


def _location_paths(match: Match) -> list[tuple[bool, str]]:
    if match.path_type == EXACT:
        return [(True, match.path)]
    if match.path_type == IMPLEMENTATION_SPECIFIC or match.path == "/":
        return [(False, match.path)]
    # Prefix by elements: the path itself exactly, and everything under "path/" (ingress-nginx does this).
    return [(True, match.path), (False, match.path + "/")]


def _covers(match: Match, exact: bool, path: str) -> bool:
    """Whether ``match`` matches every request that NGINX sends to this location."""
    if exact:
        return path_matches(match, path)
    if match.path_type == EXACT:
        return False
    if match.path_type == IMPLEMENTATION_SPECIFIC:
        return path.startswith(match.path)
    return match.path == "/" or path.startswith(match.path + "/")


def locations(vhost: VirtualHost) -> list[Location]:
    """The virtual host as NGINX locations, in a stable order (exact ones first, then by path)."""
    keys = sorted({key for match in vhost.matches for key in _location_paths(match)},
                  key=lambda key: (not key[0], key[1]))
    ordered = sorted(vhost.matches, key=precedence)
    return [Location(exact, path, tuple(m for m in ordered if _covers(m, exact, path))) for exact, path in keys]


def nginx_location(vhost: VirtualHost, path: str) -> Location | None:
    """NGINX's own choice of location for ``path``: an exact location, else the longest prefix."""
    path = path.split("?", 1)[0]
    table = locations(vhost)
    for loc in table:
        if loc.exact and loc.path == path:
            return loc
    prefixes = [loc for loc in table if not loc.exact and path.startswith(loc.path)]
    return max(prefixes, key=lambda loc: len(loc.path), default=None)
