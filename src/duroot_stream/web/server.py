"""Serving the web view with uvicorn: in the foreground (`serve`), or in a thread
beside the pipeline (`run --serve`, tests)."""

from __future__ import annotations

import signal
import socket
import threading
import time
from types import FrameType, TracebackType

import uvicorn
from starlette.applications import Starlette

from duroot_stream.config import KafkaConfig

from .app import create_app

START_TIMEOUT_S = 30.0
GRACE_S = 2


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), so the URL is known before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{'127.0.0.1' if host == '0.0.0.0' else shown}:{port}"


def _server(app: Starlette) -> uvicorn.Server:
    # No access log: a live page makes a request per refresh. Open event streams
    # would hold up a shutdown for ever: they get a moment, then are cancelled.
    config_ = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACE_S,
    )
    return uvicorn.Server(config_)


def serve_forever(config: KafkaConfig, sock: socket.socket) -> None:
    """Serve until SIGINT or SIGTERM, then return: a stop like the other services'
    (exit 0). uvicorn shuts down on either and then raises the signal again for the
    handler it found installed: these, which stop a server not yet serving too."""
    server = _server(create_app(config))

    def stop(_sig: int, _frame: FrameType | None) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class WebServer:
    """The web view in a thread: `with WebServer(config) as web: print(web.url)`."""

    def __init__(self, config: KafkaConfig, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind(host, port)
        self.url = url_of(self.sock)
        self.app = create_app(config)
        self._server = _server(self.app)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self.sock]}, name="web", daemon=True
        )

    def __enter__(self) -> WebServer:
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the web view did not start at {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.app.state.live.stop()  # ends the event streams first: no waiting for the grace
        self._server.should_exit = True
        self._thread.join(30)
        self.sock.close()
