"""`duroot-stream serve`: the web view; and what `run --serve` adds after the du."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable

from duroot_stream.config import KafkaConfig
from duroot_stream.web import WebServer, bind, serve_forever, url_of

from .options import EXIT_OK, EXIT_USAGE, Subcommands, kafka_config, kafka_options

DEFAULT_PORT = 8080

log = logging.getLogger("duroot.web")


def add_commands(sub: Subcommands) -> None:
    """Register `serve` on `duroot-stream`'s parser."""
    parser = sub.add_parser("serve", help="the web view: workflows, du results, live progress")
    kafka_options(parser)
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    parser.set_defaults(handler=cli_main)


def cli_main(args: argparse.Namespace) -> int:
    config = kafka_config(args)
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        print(
            f"duroot-stream serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return EXIT_USAGE
    url = url_of(sock)
    print(
        f"serving {url}/ (topics {config.topic_prefix!r} at {config.bootstrap_servers})",
        flush=True,
    )
    serve_forever(config, sock)
    log.info("web view stopped", extra={"url": url})
    return EXIT_OK


def serve_until_stopped(
    config: KafkaConfig,
    port: int,
    workflow_id: str,
    say: Callable[[str], None],
    stop: threading.Event | None = None,
) -> None:
    """`run --serve`: the web view beside the running pipeline until Ctrl-C (or `stop`)."""
    with WebServer(config, port=port) as web:
        say(f"result page: {web.url}/workflows/{workflow_id}  (all workflows: {web.url}/)")
        say("serving until Ctrl-C ...")
        try:
            (stop or threading.Event()).wait()
        except KeyboardInterrupt:  # the way a --serve run ends: shut down as usual
            say("stopping the web view ...")
