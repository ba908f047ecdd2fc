"""The probe's engine: every request a non-blocking socket and a small state, under one ``epoll``.

The probe must never be what limits a measurement: its CPU per request should stay well under what
Open vSwitch spends forwarding that request. asyncio's streams cost ~230 us of CPU per request (a task,
a transport, a protocol, a StreamReader and timeout handles for every connection), two thirds of the
switch's share; here a request costs a socket, the system calls any client makes (one edge-triggered
epoll registration among them) and one ``_Request``, and the event loop is ``epoll`` itself. Of what is
left, about half is the kernel's: ``bench/probe_rate.py`` runs a C client making the same system calls beside it.
What each request records is what ``lab.measure.probe`` documents.

The driving rules (round-robin targets; per target ``concurrency`` in flight until the first timeout or
a quarter of a timeout without one connection, then all at once; or the open-loop schedule of ``rate``)
are ``lab.measure.probe``'s; this module is how they run. Timeouts are one deadline per request, and as
every request has the same timeout, the requests in start order are also in deadline order: one deque.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import ssl
import time
from _socket import socket as _raw_socket
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_ERRORS = {
    errno.ECONNREFUSED: "refused",
    errno.ECONNRESET: "reset",
    errno.EPIPE: "reset",
    errno.EHOSTUNREACH: "unreachable",
    errno.ENETUNREACH: "unreachable",
}
READ_CHUNK = 64 * 1024
HEAD_LIMIT = 64 * 1024  # a head longer than this is a bad response (asyncio's StreamReader limit)
_IN, _OUT, _TROUBLE = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR | select.EPOLLHUP
# A TCP request is registered once for both directions, edge-triggered: what it waits for next follows from
# its state, not from the mask, so no epoll_ctl is spent switching from writing to reading.
# EPOLLRDHUP says the server's FIN has come: all the answer is queued, and the read that would return the
# end of it need not be made.
_RDHUP = select.EPOLLRDHUP
_BOTH = select.EPOLLIN | select.EPOLLOUT | select.EPOLLET | _RDHUP


@dataclass(slots=True)
class Record:
    """What one request saw; times in milliseconds from the start of its connect()."""

    target: str
    ok: bool = False
    error: str | None = None
    status: int | None = None
    bytes: int | None = None
    connect_ms: float | None = None
    latency_ms: float | None = None
    response: Any = None
    local: str | None = None
    t: float | None = None  # seconds from the start of the probe to this request's connect()
    location: str | None = None  # a redirect's Location header
    certificate: str | None = None  # over TLS: the subject CN of the server's certificate
    # ``response`` as the server wrote it (one JSON value, already checked by parsing it): the report
    # writes these characters instead of encoding the parsed value again.
    response_text: str | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        doc = {"target": self.target, "ok": self.ok, "error": self.error, "status": self.status,
               "bytes": self.bytes, "connectMs": self.connect_ms, "latencyMs": self.latency_ms,
               "response": self.response, "local": self.local, "t": self.t}
        if self.location is not None:
            doc["location"] = self.location
        if self.certificate is not None:
            doc["certificate"] = self.certificate
        return doc

    def json_text(self) -> str:
        """``json.dumps(self.to_json())``, as the same document (``response`` written last, as it came)."""
        doc = self.to_json()
        if self.response_text is None:
            return _dumps(doc)
        del doc["response"]
        return f'{_dumps(doc)[:-1]}, "response": {self.response_text}}}'


@dataclass(frozen=True)
class HttpRequest:
    """What a request to an L7 proxy says beyond its path: Host (and SNI), TLS, extra headers."""

    host: str | None = None
    tls: bool = False
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def l7(self) -> bool:
        return self != PLAIN


PLAIN = HttpRequest()


def classify(exc: OSError) -> str:
    """The record's error word for a socket error."""
    return _ERRORS.get(exc.errno or 0, f"other:{exc}")


class BadResponse(ValueError):
    """The server answered something that is not a whole HTTP response (never counted as served)."""


_scan = json.JSONDecoder().scan_once  # json's C scanner, without loads' Python layers and its two regexes
_dumps = json.JSONEncoder().encode


def parse_json(data: bytes | bytearray) -> tuple[Any, str | None]:
    """A body as JSON -> (the value, its text when the body is that one value and white space), or ValueError.

    The usual body (a value and a newline) costs one C call; anything else goes through ``json.loads``,
    which says what is wrong with it."""
    text = data.decode()
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text), None  # not a value at 0 (leading space, or not JSON)
    if end == len(text) or not text[end:].strip():
        return value, text[:end]
    return json.loads(text), None  # trailing data: loads raises the error it would have raised


def parse_head(head: bytes) -> tuple[int, str | None, bool, int | None]:
    """An HTTP response head -> (status, Location, whether the body is JSON, Content-Length: the first
    one, None unless it is all digits)."""
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ")[1])
    except (IndexError, ValueError) as exc:
        raise BadResponse(f"status line {lines[0][:80]!r}") from exc
    location = length = None
    is_json = False
    for line in lines[1:]:
        lower = line.lower()
        if lower.startswith("location:"):
            location = location or line.split(":", 1)[1].strip()
        elif lower.startswith("content-type: application/json"):
            is_json = True
        elif lower.startswith("content-length:"):
            length = length or line.split(":", 1)[1].strip()
    return status, location, is_json, int(length) if length is not None and length.isdigit() else None


def _peer_cn(sock: ssl.SSLSocket) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    der = sock.getpeercert(binary_form=True)
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _client_tls() -> ssl.SSLContext:
    # The probe reports which certificate it got (a test checks it); it trusts none, like curl -k.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Target:
    """One target's closed-loop state: what is left to send and whether it is released at once."""

    __slots__ = ("address", "name", "pending", "running", "flooding", "connected", "answered")

    def __init__(self, address: tuple[str, int], indices: Sequence[int]) -> None:
        self.address = address
        self.name = f"{address[0]}:{address[1]}"
        self.pending = deque(indices)
        self.running = self.connected = self.answered = 0
        self.flooding = False


class _Request:
    __slots__ = ("index", "target", "record", "sock", "fd", "start", "deadline", "done", "connecting", "out",
                 "head", "body", "size", "is_json", "length")

    def __init__(self, index: int, target: _Target, record: Record, start: float, deadline: float) -> None:
        self.index, self.target, self.record = index, target, record
        self.start, self.deadline = start, deadline
        self.sock: Any = None
        self.fd = -1
        self.done = False
        self.connecting = True
        self.out = b""
        self.head: bytes | bytearray | None = bytearray()  # None once the head is parsed
        self.body = bytearray()
        self.size = 0
        self.is_json = False
        self.length: int | None = None


def _millis(start: float, now: float) -> float:
    return round((now - start) * 1000, 3)


class Engine:
    """Runs one probe's requests to the end; ``records`` come out in request order."""

    def __init__(self, targets: Sequence[tuple[str, int]], requests: int, concurrency: int, timeout: float,
                 path: str, protocol: str = "tcp", request: HttpRequest = PLAIN) -> None:
        self.targets = [_Target(t, range(k, requests, len(targets))) for k, t in enumerate(targets)]
        self.requests, self.concurrency, self.timeout = requests, concurrency, timeout
        self.path, self.udp, self.request = path, protocol == "udp", request
        self.tls = _client_tls() if request.tls else None
        self.records: list[Record | None] = [None] * requests
        self.by_fd: dict[int, _Request] = {}
        self.expiry: deque[_Request] = deque()
        self.epoll = select.epoll()
        # Every read lands in this one buffer: a fresh 64 KiB bytes object per recv() makes the allocator
        # grow and trim the heap, and the page faults cost more than the reads.
        self.buffer = bytearray(READ_CHUNK)
        self.view = memoryview(self.buffer)
        self.origin = 0.0
        self._wire: dict[str, bytes] = {}
        # The C socket, without socket.socket's Python layer, unless TLS must wrap it.
        self._socket = socket.socket if self.tls is not None else _raw_socket
        self._kind = (socket.SOCK_DGRAM if self.udp else socket.SOCK_STREAM) | socket.SOCK_NONBLOCK
        self._heads: dict[bytes, tuple[int, str | None, bool, int | None]] = {}

    def run(self, rate: float | None = None) -> list[Record]:
        try:
            self.origin = time.perf_counter()
            if rate is None:
                self._closed_loop()
            else:
                self._paced(rate)
        finally:
            for req in list(self.by_fd.values()):
                self._close(req)
            self.epoll.close()
        return [r for r in self.records if r is not None]

    # -- driving ---------------------------------------------------------------------------------------------

    def _closed_loop(self) -> None:
        silent_after = self.origin + self.timeout / 4
        targets = self.targets
        # The targets still silent: none of their requests has connected or been answered yet. A target
        # leaves this list for good (once heard from, once flooding, once it has nothing left to send).
        silent = list(targets)
        while True:
            busy = False
            for tg in targets:
                while tg.pending and (tg.flooding or tg.running < self.concurrency):
                    self._start(tg.pending.popleft(), tg)
                busy = busy or bool(tg.pending or tg.running)
            if not busy:
                return
            now = time.perf_counter()
            if silent:
                silent = [tg for tg in silent if not tg.flooding and tg.pending and not tg.connected
                          and not tg.answered]
            wake = self._next_deadline()
            if silent:
                wake = silent_after if wake is None else min(wake, silent_after)
            self._poll(now, wake)
            if silent and time.perf_counter() >= silent_after:
                for tg in silent:  # a quarter of a timeout and no connection at all: the target drops
                    if not tg.connected and not tg.answered:
                        tg.flooding = True

    def _paced(self, rate: float) -> None:
        """Open loop: request i starts at i/rate seconds whatever happened to the others."""
        i, n = 0, self.requests
        while i < n or self.by_fd:
            now = time.perf_counter()
            while i < n and self.origin + i / rate <= now:
                tg = self.targets[i % len(self.targets)]
                self._start(i, tg)
                i += 1
            wake = self._next_deadline()
            if i < n:
                due = self.origin + i / rate
                wake = due if wake is None else min(wake, due)
            self._poll(now, wake)

    def _next_deadline(self) -> float | None:
        expiry = self.expiry
        while expiry and expiry[0].done:
            expiry.popleft()
        return expiry[0].deadline if expiry else None

    def _poll(self, now: float, wake: float | None) -> None:
        events = self.epoll.poll(-1 if wake is None else max(wake - now, 0.0))
        by_fd = self.by_fd
        for fd, mask in events:
            req = by_fd.get(fd)
            if req is not None:
                self._event(req, mask)
        now = time.perf_counter()
        expiry = self.expiry
        while expiry and (expiry[0].done or expiry[0].deadline <= now):
            req = expiry.popleft()
            if not req.done:
                self._finish(req, "timeout")

    # -- one request -----------------------------------------------------------------------------------------

    def _wire_bytes(self, target: str) -> bytes:
        data = self._wire.get(target)
        if data is None:
            if self.udp:
                data = self.path.encode()
            else:
                rq = self.request
                extra = "".join(f"{name}: {value}\r\n" for name, value in rq.headers)
                data = (f"GET {self.path} HTTP/1.1\r\nHost: {rq.host or target}\r\n{extra}"
                        "Connection: close\r\n\r\n").encode()
            self._wire[target] = data
        return data

    def _start(self, index: int, tg: _Target) -> None:
        start = time.perf_counter()
        record = Record(target=tg.name, t=round(start - self.origin, 4))
        self.records[index] = record
        req = _Request(index, tg, record, start, start + self.timeout)
        tg.running += 1
        try:
            sock = req.sock = self._socket(socket.AF_INET, self._kind)
            req.fd = sock.fileno()
            if self.udp:
                sock.connect(tg.address)
                record.local = "{}:{}".format(*sock.getsockname()[:2])
                sock.send(self._wire_bytes(tg.name))
                req.connecting = False
                self._watch(req, _IN)
                return
            code = sock.connect_ex(tg.address)
            if code not in (0, errno.EINPROGRESS):
                raise OSError(code, os.strerror(code))
            # The source port is chosen by connect(): known now, so a request that never connects says it too.
            record.local = "{}:{}".format(*sock.getsockname()[:2])
            self._watch(req, _BOTH)
        except OSError as exc:
            self._finish(req, classify(exc))

    def _watch(self, req: _Request, mask: int) -> None:
        self.by_fd[req.fd] = req
        self.epoll.register(req.fd, mask)
        self.expiry.append(req)

    def _event(self, req: _Request, mask: int) -> None:
        try:
            if req.connecting:
                self._connected(req, mask)
            elif req.out:
                self._send(req)
                if not req.out and mask & _IN:  # the edge that said "readable" is not repeated
                    self._receive(req, mask)
            else:
                self._receive(req, mask)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass  # the socket is watched both ways, edge-triggered: the next edge resumes it
        except ssl.SSLError as exc:
            self._finish(req, f"other:TLS: {exc.reason}")
        except OSError as exc:
            self._finish(req, classify(exc))
        except BadResponse as exc:
            self._finish(req, f"other:bad response: {exc}")

    def _connected(self, req: _Request, mask: int) -> None:
        sock = req.sock
        if not isinstance(sock, ssl.SSLSocket):
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if mask & _TROUBLE else 0
            if code:
                raise OSError(code, os.strerror(code))
            if self.tls is not None:  # the TLS handshake is part of connecting, as it is for a client
                sock = req.sock = self.tls.wrap_socket(sock, server_hostname=self.request.host or req.target.address[0],
                                                       do_handshake_on_connect=False)
        if self.tls is not None:
            sock.do_handshake()  # SSLWant* until it is done
            req.record.certificate = _peer_cn(sock)
        req.connecting = False
        tg = req.target
        req.record.connect_ms = _millis(req.start, time.perf_counter())
        tg.connected += 1
        req.out = self._wire_bytes(tg.name)
        self._send(req)

    def _send(self, req: _Request) -> None:
        try:
            sent = req.sock.send(req.out)
        except BlockingIOError:
            sent = 0
        req.out = req.out[sent:]

    def _receive(self, req: _Request, mask: int) -> None:
        if self.udp:
            data = req.sock.recv(65536)
            record = req.record
            record.bytes = len(data)
            try:
                record.response, record.response_text = parse_json(data)
            except ValueError as exc:
                raise BadResponse(str(exc)) from None
            self._finish(req, None, answered=True)
            return
        sock, view = req.sock, self.view
        while True:
            try:
                n = sock.recv_into(self.buffer)
            except (BlockingIOError, ssl.SSLWantReadError):
                return
            except ssl.SSLEOFError:  # closed without close_notify: the end of the answer all the same
                n = 0
            if not n:
                self._ended(req)
                return
            chunk = view[:n]
            if req.head is not None:
                end = -1 if req.head else self.buffer.find(b"\r\n\r\n", 0, n)
                if end >= 0:  # the usual case: the whole head in the first read, parsed where it landed
                    head, chunk = bytes(view[:end]), view[end + 4:n]
                else:
                    req.head += chunk
                    end = req.head.find(b"\r\n\r\n")
                    if end < 0:
                        if len(req.head) > HEAD_LIMIT:
                            raise BadResponse(f"a head longer than {HEAD_LIMIT} bytes")
                        continue
                    head, chunk = bytes(req.head[:end]), memoryview(req.head)[end + 4:]
                req.head = None
                record = req.record
                parsed = self._heads.get(head)
                if parsed is None:  # a server's heads differ in little more than Content-Length
                    if len(self._heads) > 256:
                        self._heads.clear()
                    parsed = self._heads[head] = parse_head(head)
                record.status, record.location, req.is_json, req.length = parsed
            req.size += len(chunk)
            if req.is_json:  # bulk bodies are counted, not kept
                req.body += chunk
            if n < READ_CHUNK and self.tls is None:  # (TLS has records of its own in between)
                if mask & _RDHUP and not mask & _TROUBLE:  # the FIN came before this read: it read the rest
                    self._ended(req)
                    return
                if req.head is None and req.length is not None and req.size >= req.length:
                    return  # all there: the FIN's own edge comes next (a read now would only find nothing yet)

    def _ended(self, req: _Request) -> None:
        if req.head is not None:
            raise BadResponse(f"the answer ended after {len(req.head)} bytes, before the end of its head")
        record = req.record
        record.bytes = req.size
        length = req.length
        if length is not None and length != req.size:
            raise BadResponse(f"the answer ended after {req.size} of {length} bytes")  # never counted as served
        try:
            if req.is_json:
                record.response, record.response_text = parse_json(req.body)
        except ValueError as exc:
            raise BadResponse(str(exc)) from None
        ok = record.status == 200 or self.request.l7
        self._finish(req, None if ok else f"other:HTTP {record.status}", answered=True)

    def _finish(self, req: _Request, error: str | None, answered: bool = False) -> None:
        """The request's outcome; every failure is recorded, none is raised."""
        if req.done:
            return
        now = time.perf_counter()
        req.done = True
        record = req.record
        record.error = error
        record.ok = error is None and answered
        record.latency_ms = _millis(req.start, now) if record.ok else None
        tg = req.target
        tg.running -= 1
        tg.answered += 1
        if error == "timeout":
            tg.flooding = True
        self._close(req)

    def _close(self, req: _Request) -> None:
        self.by_fd.pop(req.fd, None)  # closing the socket takes it out of the epoll set too
        if req.sock is not None:
            req.sock.close()
            req.sock = None
