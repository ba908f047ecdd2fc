"""The NGINX configuration of one L7 proxy, rendered from the routing table (pure: data in, text out).

The template (``nginx.conf.tmpl``, beside this module) holds what every proxy shares: foreground NGINX
with its files under the run's directory, and the headers ingress-nginx sets towards the app
(``X-Real-IP``, ``X-Forwarded-For``, ``-Host``, ``-Port``, ``-Proto``). This module writes the rest:

- one ``server`` per virtual host and listener; host names as ``lab.kube.http_routing`` matches them (an
  Ingress wildcard becomes a one-label regex, ``~^[^.]+\\.foo\\.com$``, as ingress-nginx writes it; a
  Gateway wildcard stays NGINX's own suffix wildcard), each listen port with one default server (the
  catch-all virtual host, or a 404 one: ingress-nginx's default backend), TLS by SNI with the host's
  certificate and the default certificate for unknown names, and ``return 308 https://...`` on plain HTTP
  for TLS hosts (ingress-nginx's ``ssl-redirect``);
- the locations of ``http_routing.locations``: inside each, the fitting match's backend is chosen by
  ``if`` blocks over header maps (written worst first, so the best fitting match sets the variable last)
  and ``proxy_pass http://$lab_upstream``; weighted backends through ``split_clients`` on ``$request_id``;
- one ``upstream`` per backend: the Service's ready endpoints (pod IP:port, ingress-nginx's default) or the
  address the caller resolved instead (its clusterIP, ``service-upstream``); a Service that does not exist
  or has no ready endpoints answers 503 (ingress-nginx) or 500 (Gateway API: an unresolved backendRef), from a
  small status server on a unix socket;
- PROXY protocol: ``listen ... proxy_protocol`` and ``real_ip_header proxy_protocol``, so that
  ``$remote_addr``, and with it ``X-Forwarded-For``, is the client the load balancer saw.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lab.kube.http_routing import (
    CATCH_ALL,
    ONE_LABEL,
    BackendRef,
    Location,
    Match,
    Redirect,
    VirtualHost,
    locations,
)

TEMPLATE = Path(__file__).with_name("nginx.conf.tmpl")
STATUS_CODES = (404, 500, 503)
WELL_KNOWN_PORTS = {"http": 80, "https": 443}
INDENT = "    "


@dataclass(frozen=True)
class Listen:
    port: int
    ssl: bool = False


@dataclass
class Server:
    vhost: VirtualHost
    listens: tuple[Listen, ...]
    redirect: bool = False  # plain HTTP -> 308 to https (Ingress tls hosts)
    cert: tuple[str, str] | None = None  # (certificate, key) paths; None: the default certificate


@dataclass
class NginxSite:
    what: str  # for the header comment, e.g. "ingress-nginx controller pod ingress-nginx-controller-..."
    prefix: str  # directory for NGINX's pid, logs, temp files and status sockets
    servers: list[Server]
    upstreams: dict[str, list[str] | None]  # BackendRef.key -> "ip:port" addresses; None: no such Service
    default_cert: tuple[str, str]
    proxy_protocol: bool = False
    unresolved_status: int = 503  # a missing Service: 503 (ingress-nginx) or 500 (Gateway API)
    run_as_root: bool = True
    _names: dict[str, str] = field(default_factory=dict, repr=False)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def upstream_name(ref: BackendRef) -> str:
    return f"lab_{_slug(ref.namespace)}_{_slug(ref.service)}_{_slug(str(ref.port))}"


def status_upstream(code: int) -> str:
    return f"lab_status_{code}"


def server_name(vhost: VirtualHost) -> str:
    if vhost.host == CATCH_ALL:
        return "_"
    if vhost.host.startswith("*.") and vhost.wildcard == ONE_LABEL:
        return "~^[^.]+" + re.escape(vhost.host[1:]).replace("\\-", "-") + "$"
    return vhost.host


class _Writer:
    """Collects the maps and split_clients a site needs while its locations are written."""

    def __init__(self, site: NginxSite):
        self.site = site
        self.preamble: list[str] = []
        self.count = 0
        self.made: dict[tuple, str] = {}  # one split_clients or map per distinct set of backends or headers
        self.redirects: list[tuple[str, int, str]] = []  # (upstream name, status, Location) of RequestRedirects

    def _next(self, kind: str) -> str:
        self.count += 1
        return f"$lab_{kind}_{self.count}"

    def backend(self, ref: BackendRef) -> str:
        addresses = self.site.upstreams.get(ref.key)
        if addresses is None:
            return status_upstream(self.site.unresolved_status)
        return upstream_name(ref) if addresses else status_upstream(503)

    def target(self, backends: tuple[BackendRef, ...]) -> str:
        """An upstream name, or a split_clients variable over the weighted backends."""
        live = [b for b in backends if b.weight > 0]
        if not live:
            return status_upstream(500)  # Gateway API: all weights zero
        if len(live) == 1:
            return self.backend(live[0])
        key = ("split", *live)
        if key in self.made:
            return self.made[key]
        var = self.made[key] = self._next("split")
        total = sum(b.weight for b in live)
        lines = [f"split_clients \"${{request_id}}\" {var} {{"]
        for ref in live[:-1]:
            lines.append(f"{INDENT}{100 * ref.weight / total:.2f}% {self.backend(ref)};")
        lines.append(f"{INDENT}* {self.backend(live[-1])};")
        self.preamble += lines + ["}"]
        return var

    def redirect(self, redirect: Redirect, listen: Listen) -> str:
        """An upstream that answers with the redirect (a small server on a unix socket, like the status ones),
        its Location as the Gateway API says: the request's scheme and host unless given; the port given,
        else the scheme's well-known one, else the listener's; never :80 on http nor :443 on https."""
        scheme = redirect.scheme or ("https" if listen.ssl else "http")
        port = redirect.port or (WELL_KNOWN_PORTS[redirect.scheme] if redirect.scheme else listen.port)
        shown_port = "" if WELL_KNOWN_PORTS[scheme] == port else f":{port}"
        location = f"{scheme}://{redirect.hostname or '$host'}{shown_port}$request_uri"
        key = ("redirect", redirect.status, location)
        if key not in self.made:
            self.made[key] = f"lab_redirect_{len(self.redirects) + 1}"
            self.redirects.append((self.made[key], redirect.status, location))
        return self.made[key]

    def condition(self, match: Match) -> str:
        key = ("hdr", *match.headers)
        if key in self.made:
            return self.made[key]
        var = self.made[key] = self._next("hdr")
        source = "|".join(f"$http_{_slug(name.lower())}" for name, _ in match.headers)
        key = "|".join(value for _, value in match.headers)
        self.preamble += [f"map {_quote(source)} {var} {{", f"{INDENT}{_quote(key)} 1;",
                          f"{INDENT}default 0;", "}"]
        return var

    def location(self, loc: Location | None, fallback: tuple[BackendRef, ...], listen: Listen) -> list[str]:
        """``listen``: the server's (first) listener, which a redirect's port follows."""
        head = "location / {" if loc is None else f"location {'= ' if loc.exact else ''}{loc.path} {{"
        fallback_target = self.target(fallback) if fallback else status_upstream(404)
        body = [f"set $lab_upstream {fallback_target};"]
        for match in reversed(loc.matches if loc else ()):
            chosen = self.redirect(match.redirect, listen) if match.redirect else self.target(match.backends)
            if match.headers:
                body.append(f"if ({self.condition(match)}) {{ set $lab_upstream {chosen}; }}")
            else:
                body.append(f"set $lab_upstream {chosen};")
        body.append("proxy_pass http://$lab_upstream;")
        return [head, *(INDENT + line for line in body), "}"]


def _listen(listen: Listen, default: bool, proxy_protocol: bool) -> str:
    parts = [f"listen {listen.port}"]
    if listen.ssl:
        parts.append("ssl")
    if default:
        parts.append("default_server")
    if proxy_protocol:
        parts.append("proxy_protocol")
    return " ".join(parts) + ";"


def _server(writer: _Writer, server: Server, defaults: set[int]) -> list[str]:
    site = writer.site
    lines = [f"# {server.vhost.host or 'catch-all'}", "server {", f"{INDENT}server_name {server_name(server.vhost)};"]
    for listen in server.listens:
        lines.append(INDENT + _listen(listen, listen.port in defaults, site.proxy_protocol))
    if server.cert:
        lines += [f"{INDENT}ssl_certificate {server.cert[0]};", f"{INDENT}ssl_certificate_key {server.cert[1]};"]
    if server.redirect:
        lines.append(f"{INDENT}if ($scheme = http) {{ return 308 https://$host$request_uri; }}")
    table = locations(server.vhost)
    for loc in table:
        lines += [INDENT + line for line in writer.location(loc, server.vhost.fallback, server.listens[0])]
    if not any(not loc.exact and loc.path == "/" for loc in table):
        lines += [INDENT + line for line in writer.location(None, server.vhost.fallback, server.listens[0])]
    return lines + ["}"]


def render(site: NginxSite) -> str:
    writer = _Writer(site)
    ports = {listen.port: listen for server in site.servers for listen in server.listens}
    servers: list[str] = []
    claimed: set[int] = set()
    for server in site.servers:
        defaults = {lst.port for lst in server.listens} - claimed if server.vhost.host == CATCH_ALL else set()
        claimed |= defaults
        servers += _server(writer, server, defaults)
    for port, listen in sorted(ports.items()):
        if port not in claimed:  # ingress-nginx's default server: the default backend answers 404
            servers += _server(writer, Server(VirtualHost(CATCH_ALL), (listen,)), {port})
    upstreams: list[str] = []
    for key, addresses in site.upstreams.items():
        if addresses:
            ref = _ref_from_key(key)
            upstreams += [f"upstream {upstream_name(ref)} {{", *(f"{INDENT}server {a};" for a in addresses), "}"]
    for code in STATUS_CODES:
        sock = f"unix:{site.prefix}/status-{code}.sock"
        upstreams += [f"upstream {status_upstream(code)} {{", f"{INDENT}server {sock};", "}",
                      "server {", f"{INDENT}listen {sock};", f"{INDENT}return {code};", "}"]
    for number, (name, code, location) in enumerate(writer.redirects, 1):
        sock = f"unix:{site.prefix}/redirect-{number}.sock"
        upstreams += [f"upstream {name} {{", f"{INDENT}server {sock};", "}",
                      "server {", f"{INDENT}listen {sock};", f"{INDENT}return {code} {location};", "}"]
    real_ip = ""
    if site.proxy_protocol:
        real_ip = f"{INDENT}set_real_ip_from 0.0.0.0/0;\n{INDENT}real_ip_header proxy_protocol;\n"
    body = "\n".join(INDENT + line if line else "" for line in [*writer.preamble, *upstreams, *servers])
    return (TEMPLATE.read_text()
            .replace("{{what}}", site.what)
            .replace("{{user}}", "user root root;" if site.run_as_root else "")
            .replace("{{prefix}}", site.prefix)
            .replace("{{default_cert}}", site.default_cert[0])
            .replace("{{default_key}}", site.default_cert[1])
            .replace("{{real_ip}}", real_ip)
            .replace("{{body}}", body))


def _ref_from_key(key: str) -> BackendRef:
    namespace, rest = key.split("/", 1)
    service, port = rest.rsplit(":", 1)
    return BackendRef(service, int(port) if port.isdigit() else port, namespace)
