"""lab.measure.probe against small servers in the test's own event loop, on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from lab.measure.probe import parse_target, percentiles, run_probe

REPO = Path(__file__).resolve().parents[2]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def server(handler: Handler) -> AsyncIterator[str]:
    """A loopback server running ``handler`` per connection; yields its ``ip:port``."""
    srv = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{srv.sockets[0].getsockname()[1]}"
    finally:
        srv.close()


def answering(name: str, delay: float = 0.0, gauge: list[int] | None = None) -> Handler:
    """A handler that answers JSON ``{"pod": name}`` after ``delay``; ``gauge`` = [in flight, max]."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if gauge is not None:
            gauge[0] += 1
            gauge[1] = max(gauge)
        try:
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(delay)
            body = json.dumps({"pod": name}).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
        finally:
            if gauge is not None:
                gauge[0] -= 1
            writer.close()

    return handle


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept and never answer: what a pod behind a black-holing node looks like to the client."""
    await reader.read()
    writer.close()


@contextlib.contextmanager
def closed_port() -> Iterator[socket.socket]:
    """A port bound on 127.0.0.1 but not listening, so that a SYN to it gets a RST (and stays ours)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock


def test_requests_are_spread_round_robin_and_recorded() -> None:
    async def scenario() -> dict:
        async with server(answering("a")) as a, server(answering("b")) as b:
            return await run_probe([a, b], requests=6, concurrency=2, timeout=2.0)

    report = asyncio.run(scenario())
    records = report["records"]
    assert [r["response"]["pod"] for r in records] == ["a", "b"] * 3
    for record in records:
        assert record["ok"] and record["error"] is None and record["status"] == 200
        assert record["local"].startswith("127.0.0.1:")
        assert 0 <= record["connectMs"] <= record["latencyMs"]
    assert set(report) == {"startedAt", "durationS", "records"}


def test_concurrency_is_capped_while_the_target_answers() -> None:
    gauge = [0, 0]

    async def scenario() -> dict:
        async with server(answering("a", delay=0.1, gauge=gauge)) as a:
            return await run_probe([a], requests=12, concurrency=3, timeout=2.0)

    report = asyncio.run(scenario())
    assert all(r["ok"] for r in report["records"])
    assert gauge[1] == 3, f"the server saw at most {gauge[1]} requests at once, expected 3"


def test_silent_target_costs_about_two_timeouts() -> None:
    # 40 requests, 4 at a time, 0.5 s each: a probe that kept the concurrency of 4 would need
    # 10 rounds = 5 s. Releasing the rest after the first timeout needs ~2 timeouts = ~1 s.
    # The bound of 3 s leaves room for a slow machine and still fails a non-adaptive probe.
    async def scenario() -> dict:
        async with server(silent) as s:
            return await run_probe([s], requests=40, concurrency=4, timeout=0.5)

    report = asyncio.run(scenario())
    assert [r["error"] for r in report["records"]] == ["timeout"] * 40
    assert all(r["connectMs"] is not None and r["latencyMs"] is None for r in report["records"])
    assert report["durationS"] < 3.0, f"took {report['durationS']} s"


def test_closed_port_is_refused() -> None:
    with closed_port() as sock:
        target = f"127.0.0.1:{sock.getsockname()[1]}"
        report = asyncio.run(run_probe([target], requests=3, concurrency=2, timeout=1.0))
    for record in report["records"]:
        started = record.pop("t")
        assert record.pop("local").startswith("127.0.0.1:")  # the source port connect() chose: said on failure too
        assert record == {"target": target, "ok": False, "error": "refused", "status": None, "bytes": None,
                          "connectMs": None, "latencyMs": None, "response": None}
        assert 0 <= started < 1.0


def test_paced_requests_start_on_schedule() -> None:
    with closed_port() as sock:
        target = f"127.0.0.1:{sock.getsockname()[1]}"
        report = asyncio.run(run_probe([target], requests=5, timeout=1.0, rate=20))
    starts = [r["t"] for r in report["records"]]
    assert all(abs(t - i / 20) < 0.04 for i, t in enumerate(starts)), starts


def test_reset_by_the_server_is_reset() -> None:
    async def abort(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        # SO_LINGER 0 makes close() send a RST instead of a FIN
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def scenario() -> dict:
        async with server(abort) as s:
            return await run_probe([s], requests=2, concurrency=1, timeout=2.0)

    assert [r["error"] for r in asyncio.run(scenario())["records"]] == ["reset", "reset"]


def test_percentiles_are_nearest_rank() -> None:
    values = [7, 1, 10, 3, 2, 9, 4, 8, 6, 5]
    assert percentiles(values, [0, 10, 50, 90, 95, 100]) == {0: 1, 10: 1, 50: 5, 90: 9, 95: 10, 100: 10}
    assert percentiles([], [50, 99]) == {50: None, 99: None}
    with pytest.raises(ValueError):
        percentiles(values, [101])


def test_parse_target() -> None:
    assert parse_target("172.18.0.11:30007") == ("172.18.0.11", 30007)
    for bad in ("172.18.0.11", ":80", "host:0", "host:http", "host:70000"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_cli_prints_one_json_document() -> None:
    with closed_port() as sock:
        target = f"127.0.0.1:{sock.getsockname()[1]}"
        done = subprocess.run(
            [sys.executable, "-m", "lab.measure.probe", "--targets", target, "--requests", "2", "--timeout", "0.5"],
            cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [r["error"] for r in report["records"]] == ["refused", "refused"]


def test_cli_rejects_a_malformed_target() -> None:
    done = subprocess.run([sys.executable, "-m", "lab.measure.probe", "--targets", "nowhere"],
                          cwd=REPO, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2 and "ip:port" in done.stderr


def test_an_answer_cut_short_is_not_counted_as_served():
    """A server that dies mid-answer (its pod's container killed) sent a head and part of a body."""
    import asyncio

    from lab.measure.probe import fetch

    async def scenario():
        async def cut(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pod\"")
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(cut, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await fetch(("127.0.0.1", port), timeout=2.0)
    record = asyncio.run(scenario())
    assert not record.ok and "ended after 6 of 100 bytes" in record.error


def test_a_json_body_is_parsed_once_and_written_as_it_came() -> None:
    from lab.measure.probe_loop import parse_json

    value, text = parse_json('{"pod": "wéb", "n": [1, 2.5e3, null], "s": "a\\"b\\u0041"}\n'.encode())
    assert value == {"pod": "wéb", "n": [1, 2500.0, None], "s": 'a"bA'}
    assert text == '{"pod": "wéb", "n": [1, 2.5e3, null], "s": "a\\"b\\u0041"}'  # without the newline
    assert parse_json(b'  {"a": 1}') == ({"a": 1}, None)  # valid, but not spliced: json.loads read it
    for bad in (b'{"a": 1} trailing', b'{"a":', b"", b"nope", b'"\xff"'):
        with pytest.raises(ValueError):
            parse_json(bad)


def test_the_report_text_is_the_report_document() -> None:
    """The CLI writes records by splicing bodies in; read back, that is exactly probe()'s document."""
    from lab.measure.probe import report_text
    from lab.measure.probe_loop import Record, parse_json

    value, text = parse_json(b'{"pod": "web-1", "headers": {"x": "\\u00e9\\n"}}\n')
    records = [Record(target="127.0.0.1:80", ok=True, status=200, bytes=40, connect_ms=0.1, latency_ms=0.25,
                      response=value, response_text=text, local="127.0.0.1:4000", t=0.0),
               Record(target="127.0.0.1:80", error='other:bad response: "x"\n', local="127.0.0.1:4001", t=0.01),
               Record(target="127.0.0.1:80", ok=True, status=301, location="https://a/", certificate="a")]
    head = {"startedAt": "2026-01-01T00:00:00.000+00:00", "durationS": 0.5}
    assert json.loads(report_text(head, records)) == {**head, "records": [r.to_json() for r in records]}


def run_cli(handler: Handler, *args: str) -> list[dict]:
    """The probe's CLI against ``handler`` (a server in this test's event loop): its records."""

    async def scenario() -> tuple[int, bytes, bytes]:
        async with server(handler) as target:
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lab.measure.probe", "--targets", target, "--timeout", "5", *args, cwd=REPO,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(child.communicate(), 60)
            return child.returncode or 0, out, err

    code, out, err = asyncio.run(scenario())
    assert code == 0, err.decode()
    return json.loads(out)["records"]


def test_cli_reads_a_head_split_across_reads_and_reports_the_body() -> None:
    """The head's end in a later read than its start (the slow path), and a body in two more writes."""
    body = json.dumps({"pod": "web-2", "note": "é\t\"q\""}).encode() + b"\n"

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        for part in (head[:20], head[20:] + b"\r", b"\n" + body[:10], body[10:]):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.close()

    records = run_cli(answer, "--requests", "3", "--concurrency", "1")
    assert [(r["ok"], r["status"], r["bytes"], r["response"]) for r in records] == \
        [(True, 200, len(body), {"pod": "web-2", "note": "é\t\"q\""})] * 3


def test_a_json_body_that_is_not_json_is_a_bad_response() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 9\r\n\r\n{\"pod\": }")
        await writer.drain()
        writer.close()

    [record] = run_cli(answer, "--requests", "1")
    assert not record["ok"] and record["error"].startswith("other:bad response: Expecting value")


def test_bytes_after_the_content_length_are_a_bad_response_however_the_fin_comes() -> None:
    """The probe stops reading at the FIN (EPOLLRDHUP), not at Content-Length: whatever a server sends
    past its Content-Length is still read and counted, with the FIN at once or a moment later."""

    def answering_long(fin_delay: float) -> Handler:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await asyncio.sleep(fin_delay)
            writer.write(b"!")  # one byte too many
            await writer.drain()
            await asyncio.sleep(fin_delay)
            writer.close()

        return answer

    for delay in (0.0, 0.05):
        records = run_cli(answering_long(delay), "--requests", "2", "--concurrency", "1")
        assert [(r["ok"], r["error"]) for r in records] == \
            [(False, "other:bad response: the answer ended after 3 of 2 bytes")] * 2, delay


def test_an_answer_is_served_when_its_fin_comes_later() -> None:
    """All of Content-Length in one read, the FIN 50 ms after: the request ends at the FIN's edge."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"pod": "web-3"}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    records = run_cli(answer, "--requests", "3", "--concurrency", "2")
    assert [(r["ok"], r["response"]) for r in records] == [(True, {"pod": "web-3"})] * 3
    assert all(r["latencyMs"] >= 45 for r in records)  # it waited for the FIN, as before
