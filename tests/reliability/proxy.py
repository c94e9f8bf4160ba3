"""A loopback TCP proxy between one Kafka client and its broker, that makes network
trouble on request: stall (nothing forwarded either way), reset (every connection
closed with a TCP RST), delay (the next requests of chosen kinds held back).

It reads the client's side as Kafka frames: int32 size, then the request header
(int16 api_key, int16 api_version, int32 correlation id, ...), so a delay can pick
Produce (0), AddOffsetsToTxn (25), EndTxn (26) or TxnOffsetCommit (28) requests
and leave the rest alone. A connection keeps its order: what comes after a held
request on the same connection waits behind it, as it would behind a slow network.
The broker's side is forwarded as bytes. Threads, one pair per connection; every
fault is counted in `stats`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

PRODUCE, ADD_OFFSETS_TO_TXN, END_TXN, TXN_OFFSET_COMMIT = 0, 25, 26, 28
HEADER = struct.Struct(">ihhi")  # size, api_key, api_version, correlation id
CHUNK = 65536
Pump = Callable[[socket.socket, socket.socket], None]


@dataclass(frozen=True)
class RequestHeader:
    size: int  # bytes after the size field
    api_key: int
    api_version: int
    correlation_id: int


def parse_header(frame_start: bytes) -> RequestHeader:
    """The first 12 bytes of a request frame (size included) as its header."""
    if len(frame_start) < HEADER.size:
        raise ValueError(
            f"a Kafka request header needs {HEADER.size} bytes, got {len(frame_start)}"
        )
    size, api_key, api_version, correlation_id = HEADER.unpack_from(frame_start)
    if size < HEADER.size - 4:
        raise ValueError(f"request size {size} is shorter than its header")
    return RequestHeader(size, api_key, api_version, correlation_id)


@dataclass
class ProxyStats:
    connections: int = 0
    requests: Counter[int] = field(default_factory=Counter)  # by api key
    stalls: int = 0
    resets: int = 0  # reset() calls
    connections_reset: int = 0
    delayed: Counter[int] = field(default_factory=Counter)  # held and sent on, by api key
    holding: Counter[int] = field(default_factory=Counter)  # holds begun, by api key


@dataclass
class _Delay:
    api_keys: frozenset[int]
    seconds: float
    remaining: int


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return bytes(data)


def _abort(sock: socket.socket) -> None:
    """Make the coming close a TCP RST (SO_LINGER 0), not a FIN, and wake the thread
    reading it (on Linux a close alone does not; SHUT_RD sends nothing)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)


class FaultProxy:
    """Listen on 127.0.0.1:`port` (0: a free one) and forward to `upstream_port`."""

    def __init__(self, upstream_port: int, port: int = 0) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", port))
        self.port = int(self._listener.getsockname()[1])
        self.stats = ProxyStats()
        self._lock = threading.Lock()
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._delays: list[_Delay] = []
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._accepter = threading.Thread(target=self._accept, name="proxy-accept", daemon=True)
        self._accepter.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # --- faults -------------------------------------------------------------------

    def stall(self) -> None:
        """Stop forwarding in both directions (connections stay open) until `resume`."""
        with self._lock:
            if self._flowing.is_set():
                self.stats.stalls += 1
            self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def open_connections(self) -> int:
        """How many client connections are being forwarded now."""
        with self._lock:
            return len(self._pairs)

    def reset(self) -> int:
        """Reset every open connection (both sides); returns how many."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
            self.stats.resets += 1
            self.stats.connections_reset += len(pairs)
        for client, upstream in pairs:
            _abort(client)
            _abort(upstream)
        return len(pairs)

    def delay(self, api_keys: set[int], seconds: float, count: int = 1) -> None:
        """Hold each of the next `count` requests with one of `api_keys` for `seconds`."""
        with self._lock:
            self._delays.append(_Delay(frozenset(api_keys), seconds, count))

    def delayed(self, api_keys: set[int]) -> int:
        """How many requests of `api_keys` have been held and then sent on."""
        with self._lock:
            return sum(self.stats.delayed[k] for k in api_keys)

    def held(self, api_keys: set[int]) -> int:
        """How many holds of requests of `api_keys` have begun (the one under way too)."""
        with self._lock:
            return sum(self.stats.holding[k] for k in api_keys)

    def close(self) -> None:
        self._closed.set()
        self._flowing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.reset()

    # --- forwarding ---------------------------------------------------------------

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                _abort(client)  # the broker is not there: the client sees it at once
                client.close()
                continue
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.stats.connections += 1
                self._pairs.append((client, upstream))
            for target, name in ((self._requests, "req"), (self._responses, "resp")):
                threading.Thread(
                    target=self._pump,
                    args=(target, client, upstream),
                    name=f"proxy-{name}",
                    daemon=True,
                ).start()

    def _pump(self, target: Pump, client: socket.socket, upstream: socket.socket) -> None:
        try:
            target(client, upstream)
        except OSError:
            pass  # reset, closed, or the peer went away
        finally:
            self._forget(client, upstream)

    def _requests(self, client: socket.socket, upstream: socket.socket) -> None:
        while True:
            head = _recv_exact(client, HEADER.size)
            header = parse_header(head)
            body = _recv_exact(client, header.size + 4 - HEADER.size)
            self._hold(header.api_key)
            self._flowing.wait()
            upstream.sendall(head + body)

    def _responses(self, client: socket.socket, upstream: socket.socket) -> None:
        while True:
            data = upstream.recv(CHUNK)
            if not data:
                raise ConnectionError("broker closed")
            self._flowing.wait()
            client.sendall(data)

    def _hold(self, api_key: int) -> None:
        with self._lock:
            self.stats.requests[api_key] += 1
            delay = next((d for d in self._delays if api_key in d.api_keys), None)
            if delay is None:
                return
            delay.remaining -= 1
            if delay.remaining <= 0:
                self._delays.remove(delay)
            self.stats.holding[api_key] += 1
        time.sleep(delay.seconds)  # the fault itself: this request arrives late
        with self._lock:
            self.stats.delayed[api_key] += 1

    def _forget(self, client: socket.socket, upstream: socket.socket) -> None:
        with self._lock:
            pair = (client, upstream)
            if pair in self._pairs:
                self._pairs.remove(pair)
        # One direction ended: end the other too (SHUT_RD wakes its reader), then close:
        # a FIN, or an RST after `reset` set SO_LINGER 0.
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RD)
            with contextlib.suppress(OSError):
                s.close()
