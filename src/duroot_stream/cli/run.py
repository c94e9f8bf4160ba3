"""`duroot-stream run [PATH]`: the whole pipeline end to end, for a first look.

Starts a local broker (unless `DUROOT_BOOTSTRAP_SERVERS` is set), creates the
topics, runs a processor, a runner for PATH and a usage exporter in this
process, begins a du workflow of PATH, waits for it, prints the result like
`get --human`, and shuts everything down again, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Protocol, TextIO

from duroot_stream import metrics as metrics_mod
from duroot_stream.client import DuRootClient, DuRootError, DuRootReader, Progress
from duroot_stream.config import KafkaConfig
from duroot_stream.exporter import Exporter, ExporterSettings
from duroot_stream.processor import Processor, ProcessorSettings
from duroot_stream.runner import Runner, RunnerSettings
from duroot_stream.wire import create_topics

from .options import EXIT_FAILED, EXIT_UNAVAILABLE, Subcommands, kafka_config, kafka_options
from .output import print_du
from .web import DEFAULT_PORT, serve_until_stopped

# The registry of a `run`: a fixed UUID, so repeated runs index under one registry.
RUN_REGISTRY = str(uuid.uuid5(uuid.NAMESPACE_URL, "duroot-stream:run"))
SERVICE_START_TIMEOUT_S = 120.0
EXPORTER_CATCH_UP_S = 30.0  # the exporter follows the events topic a fraction of a second behind


class _Service(Protocol):
    ready: threading.Event

    def run(self) -> None: ...

    def stop(self) -> None: ...


class RunFailed(Exception):
    """Something in the pipeline failed; the message says what."""


class _Say:
    """Progress lines on stderr: `==> what` with the seconds since the start."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()

    def __call__(self, text: str) -> None:
        print(f"==> [{time.monotonic() - self.started:5.1f}s] {text}", file=self.out, flush=True)


@contextmanager
def _in_thread(name: str, service: _Service, say: _Say) -> Iterator[_Service]:
    """Run a service in a thread; stop and join it on exit; fail if it dies early."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            service.run()
        except BaseException as exc:  # reported below, in the main thread
            errors.append(exc)

    thread = threading.Thread(target=target, name=name, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
    while not service.ready.wait(0.1):
        if errors or not thread.is_alive():
            raise RunFailed(f"the {name} stopped during start: {errors[0] if errors else '?'}")
        if time.monotonic() > deadline:
            raise RunFailed(f"the {name} was not ready after {SERVICE_START_TIMEOUT_S:.0f} s")
    try:
        yield service
    finally:
        service.stop()
        thread.join(60)
        if thread.is_alive():
            say(f"warning: the {name} did not stop within 60 s")


def run_pipeline(
    path: Path,
    *,
    bootstrap: str | None,
    topic_prefix: str,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    human: bool = True,
    threshold: str = "0",
    max_depth: int = 2,
    wait_timeout: float | None = None,
    stop: threading.Event | None = None,
    serve: int | None = None,
    overrides: Mapping[str, str] | None = None,
) -> int:
    """The end-to-end run; returns the exit code (0: du result printed). `overrides`:
    librdkafka settings (`-F`/`-X`) for an external cluster."""
    say = _Say(err)
    root = path.resolve()
    if not root.is_dir():
        raise RunFailed(f"{path}: not a directory (give a directory to run du on)")
    host = socket.gethostname() or "localhost"
    with ExitStack() as stack:
        if bootstrap is None:
            from duroot_stream.local.broker import LocalBroker
            from duroot_stream.local.jars import fetch_jars

            fetch_jars(err)
            say("starting a local Kafka broker (KRaft, 127.0.0.1) ...")
            log_file = Path(tempfile.gettempdir()) / f"duroot-run-broker-{os.getpid()}.log"
            broker = LocalBroker(log_file=log_file)
            stack.callback(lambda: say("broker stopped"))
            stack.callback(lambda: log_file.unlink(missing_ok=True))
            stack.enter_context(broker)
            bootstrap = broker.bootstrap
            say(f"broker ready at {bootstrap}")
        kafka = KafkaConfig(
            bootstrap_servers=bootstrap, topic_prefix=topic_prefix, overrides=overrides or {}
        )
        created = create_topics(kafka)
        say(f"topics ready under prefix {topic_prefix!r} ({len(created)} created)")

        processor = Processor(
            ProcessorSettings(kafka=kafka, instance_id=f"run-{host}-{os.getpid()}")
        )
        processor_port = metrics_mod.serve(processor.metrics.registry, 0)
        say("processor starting (restoring state from the event topic) ...")
        stack.enter_context(_in_thread("processor", processor, say))
        say(f"processor ready: {processor.workflow_count()} workflows restored")

        runner = Runner(
            RunnerSettings(
                kafka=kafka,
                host=host,
                roots=(str(root),),
                threshold=threshold,
                max_depth=max_depth,
            )
        )
        runner_port = metrics_mod.serve(runner.metrics.registry, 0)
        stack.enter_context(_in_thread("runner", runner, say))
        say(f"runner ready for host {host}, root {root}")

        exporter = Exporter(ExporterSettings(kafka=kafka))
        exporter_port = metrics_mod.serve(exporter.metrics.registry, 0)
        stack.enter_context(_in_thread("exporter", exporter, say))

        client = DuRootClient(kafka)
        stack.callback(client.close)
        begun = client.begin(RUN_REGISTRY, f"/run/{root.name or 'root'}", host, str(root))
        say(f"began workflow {begun.workflow_id}; du running on {root} ...")

        reader = DuRootReader(kafka)
        result = reader.get_du(
            begun.workflow_id,
            wait=True,
            timeout=wait_timeout,
            progress=_progress(say, stop),
        )
        say(f"workflow complete: {len(result.lines)} lines, status {result.status_code}")
        if not exporter.wait_for(begun.workflow_id, EXPORTER_CATCH_UP_S):
            say(f"warning: the exporter had not read the run after {EXPORTER_CATCH_UP_S:.0f} s")
        say(
            f"metrics: processor http://127.0.0.1:{processor_port}/metrics, "
            f"runner http://127.0.0.1:{runner_port}/metrics, "
            f"usage (exporter) http://127.0.0.1:{exporter_port}/metrics (served while running)"
        )
        if result.failed:
            print(f"du failed: {result.status_message}", file=err)
            return 1
        print(f"# workflowId: {begun.workflow_id}", file=out)
        print_du(result, out, human=human)
        out.flush()
        if serve is not None:  # --serve: the pipeline stays up behind the result page
            serve_until_stopped(kafka, serve, begun.workflow_id, say, stop)
        say("shutting down ...")
    say("done")
    return 0


def _progress(say: _Say, stop: threading.Event | None) -> Callable[[Progress], None]:
    last = {"lines": -1, "at": 0.0}

    def show(p: Progress) -> None:
        if stop is not None and stop.is_set():
            raise KeyboardInterrupt
        now = time.monotonic()
        if p.lines != last["lines"] or now - last["at"] > 5:
            say(f"{p.state.name.lower()}: {p.lines} lines received")
            last.update(lines=p.lines, at=now)

    return show


def add_commands(sub: Subcommands) -> None:
    """Register `run` on `duroot-stream`'s parser."""
    parser = sub.add_parser(
        "run", help="the whole pipeline end to end: local broker, processor, runner, du of PATH"
    )
    kafka_options(parser)
    parser.add_argument(
        "path", nargs="?", default=".", type=Path, help="directory to run du on (default: .)"
    )
    parser.add_argument("--bytes", action="store_true", help="sizes in bytes, not human units")
    # Unlike a runner's defaults (10G, 3), show every directory near the top.
    parser.add_argument("--threshold", default="0", help="du --threshold (default: 0, all)")
    parser.add_argument("--max-depth", type=int, default=2, help="du --max-depth (default: 2)")
    parser.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    parser.add_argument(
        "--serve",
        nargs="?",
        type=int,
        const=DEFAULT_PORT,
        metavar="PORT",
        help=f"then serve the web view until Ctrl-C (default port {DEFAULT_PORT}; 0: any)",
    )
    # Progress lines tell the story; the services' own logs only when something is wrong.
    parser.set_defaults(handler=cli_main, log_level="warning")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cli_main(args: argparse.Namespace) -> int:
    config: KafkaConfig = kafka_config(args)
    external = args.bootstrap_servers or os.environ.get("DUROOT_BOOTSTRAP_SERVERS")
    # Ctrl-C: the services stop in order as the stack unwinds.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run_pipeline(
            args.path,
            bootstrap=config.bootstrap_servers if external else None,
            topic_prefix=config.topic_prefix,
            human=not args.bytes,
            threshold=args.threshold,
            max_depth=args.max_depth,
            wait_timeout=args.timeout,
            serve=args.serve,
            overrides=config.overrides if external else None,
        )
    except RunFailed as exc:
        print(f"duroot-stream run: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except DuRootError as exc:
        print(f"duroot-stream run: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        print("duroot-stream run: interrupted; everything stopped", file=sys.stderr)
        return 130
