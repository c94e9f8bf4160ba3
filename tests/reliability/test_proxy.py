"""The network-fault proxy of the reliability suite, against a plain socket echo server
that speaks Kafka's framing (int32 size, then the request header): framing, counting,
stall, reset and delay."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from tests.reliability.proxy import END_TXN, PRODUCE, FaultProxy, RequestHeader, parse_header

TIMEOUT_S = 30.0  # a loaded machine: generous, every wait ends on its condition first


def frame(api_key: int, correlation_id: int, payload: bytes = b"x" * 100) -> bytes:
    body = struct.pack(">hhi", api_key, 3, correlation_id) + payload
    return struct.pack(">i", len(body)) + body


def recv_frame(sock: socket.socket) -> bytes:
    def exact(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    head = exact(4)
    return head + exact(struct.unpack(">i", head)[0])


@pytest.fixture
def echo_port() -> Iterator[int]:
    """Echoes every frame back whole, one thread per connection."""
    server = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def serve(conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn.sendall(recv_frame(conn))

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                conns.append(conn)
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()
    for conn in conns:
        conn.close()


@pytest.fixture
def proxy(echo_port: int) -> Iterator[FaultProxy]:
    p = FaultProxy(echo_port)
    yield p
    p.close()


def connect(proxy: FaultProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT_S)
    return sock


def test_parse_header_reads_size_api_key_version_and_correlation_id() -> None:
    assert parse_header(frame(END_TXN, 77)[:12]) == RequestHeader(108, END_TXN, 3, 77)
    with pytest.raises(ValueError, match="needs 12 bytes"):
        parse_header(b"\x00\x00\x00\x08\x00")
    with pytest.raises(ValueError, match="shorter than its header"):
        parse_header(struct.pack(">ihhi", 4, 0, 0, 1))


def test_forwards_frames_both_ways_and_counts_them_by_api_key(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        for i, key in enumerate([PRODUCE, PRODUCE, END_TXN]):
            sent = frame(key, i, payload=bytes(range(256)) * 300)  # several TCP segments
            sock.sendall(sent)
            assert recv_frame(sock) == sent
    assert proxy.stats.requests == {PRODUCE: 2, END_TXN: 1}
    assert proxy.stats.connections == 1


def test_stall_holds_traffic_until_resume(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(frame(PRODUCE, 1))
        recv_frame(sock)
        proxy.stall()
        sock.sendall(frame(PRODUCE, 2))
        sock.settimeout(1.0)
        with pytest.raises(TimeoutError):
            recv_frame(sock)  # nothing comes back while stalled
        proxy.resume()
        sock.settimeout(TIMEOUT_S)
        assert recv_frame(sock) == frame(PRODUCE, 2)
    assert proxy.stats.stalls == 1


def test_reset_sends_an_rst_and_new_connections_work(proxy: FaultProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(frame(PRODUCE, 1))
        recv_frame(sock)
        assert proxy.reset() == 1
        with pytest.raises(ConnectionResetError):
            for _ in range(100):  # the RST may land after one more send went out
                sock.sendall(frame(PRODUCE, 2))
                recv_frame(sock)
    with connect(proxy) as sock:
        sock.sendall(frame(PRODUCE, 3))
        assert recv_frame(sock) == frame(PRODUCE, 3)
    assert proxy.stats.resets == 1 and proxy.stats.connections_reset == 1


def test_delay_holds_only_the_chosen_requests_and_only_as_many_as_asked(
    proxy: FaultProxy,
) -> None:
    proxy.delay({END_TXN}, seconds=1.5, count=1)
    with connect(proxy) as sock:
        sock.sendall(frame(PRODUCE, 1))
        assert recv_frame(sock) == frame(PRODUCE, 1)
        started = time.monotonic()
        sock.sendall(frame(END_TXN, 2))
        assert recv_frame(sock) == frame(END_TXN, 2)
        assert time.monotonic() - started >= 1.5, "the EndTxn was not held"
        sock.sendall(frame(END_TXN, 3))
        assert recv_frame(sock) == frame(END_TXN, 3)
    assert proxy.stats.delayed == {END_TXN: 1}, "one EndTxn held, no Produce, not the second"
    assert proxy.delayed({END_TXN}) == 1
    assert proxy.stats.requests == {PRODUCE: 1, END_TXN: 2}
