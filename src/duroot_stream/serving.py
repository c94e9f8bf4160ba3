"""The metrics port of a service: `/metrics`, and the probes `/healthz` and `/readyz`.

A probe is a function returning None when all is well, or what is wrong (for
people: the body of the 503). `/healthz` says the process is alive and can
reach Kafka; `/readyz` that it does its job now (for the processor: its
partitions are assigned and restored, nothing fatal happened). Kubernetes and
load balancers read the status code; the body says why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Probe = Callable[[], str | None]


class Probes(NamedTuple):
    alive: Probe
    ready: Probe


ALWAYS = Probes(lambda: None, lambda: None)


def _handler(registry: CollectorRegistry, probes: Probes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(HTTPStatus.OK, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                probe = probes.alive if path == "/healthz" else probes.ready
                try:
                    problem = probe()
                except Exception as exc:  # a probe that fails says so, never hangs the server
                    problem = f"probe failed: {exc}"
                status = HTTPStatus.OK if problem is None else HTTPStatus.SERVICE_UNAVAILABLE
                self._send(status, f"{problem or 'ok'}\n".encode(), "text/plain; charset=utf-8")
            else:
                body = b"not found: /metrics, /healthz, /readyz\n"
                self._send(HTTPStatus.NOT_FOUND, body, "text/plain")

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would flood the log

    return Handler


def serve(
    registry: CollectorRegistry, port: int, addr: str = "127.0.0.1", probes: Probes = ALWAYS
) -> int:
    """Serve `/metrics`, `/healthz` and `/readyz` on `addr:port` (0 = a free port) in a
    daemon thread; returns the port."""
    server = ThreadingHTTPServer((addr, port), _handler(registry, probes))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return int(server.server_address[1])
