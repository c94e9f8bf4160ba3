"""What every subcommand shares: exit codes, Kafka options, waiting for a signal."""

from __future__ import annotations

import argparse
import signal
import threading
import time
from typing import TypeAlias

from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient

from duroot_stream.config import ConfigError, KafkaConfig, parse_overrides

# Exit codes scripts can rely on (also in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # the thing asked for failed (e.g. a failed workflow, a rejected command)
EXIT_USAGE = 2  # bad arguments or configuration
EXIT_UNAVAILABLE = 3  # Kafka or the processor did not answer in time
EXIT_INCOMPLETE = 4  # `get`: the workflow has not completed (yet, or within --wait TIMEOUT)

# What each cli module's `add_commands(sub)` registers its subcommands on.
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

PROBE_TIMEOUT_S = 10.0
# librdkafka retries these for ever, and a service waiting on metadata would only
# report "broker transport failure" when its own timeout ran out.
_REFUSED = {KafkaError._AUTHENTICATION: "authentication failed", KafkaError._SSL: "TLS failed"}


def kafka_config(args: argparse.Namespace, *, probe: bool = True) -> KafkaConfig:
    """The settings from flags, `-F FILE` and the environment; a secured one is
    probed once (`check_credentials`), so a wrong password fails the command at once."""
    config = KafkaConfig.from_env(
        bootstrap_servers=args.bootstrap_servers,
        topic_prefix=args.topic_prefix,
        schema_registry_url=args.schema_registry_url,
        overrides=parse_overrides(args.X or []),
        config_file=getattr(args, "config_file", None),
    )
    if probe and config.overrides.get("security.protocol", "plaintext").lower() != "plaintext":
        check_credentials(config)
    return config


def check_credentials(config: KafkaConfig, timeout: float = PROBE_TIMEOUT_S) -> None:
    """`ConfigError` naming the cause when the brokers refuse our TLS or SASL settings.
    An unreachable cluster is not decided here: the command's own retries and
    timeouts handle that."""
    refused: list[KafkaError] = []
    admin = AdminClient(config.client(error_cb=refused.append))
    future = admin.describe_cluster(request_timeout=timeout)
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        admin.poll(0.1)
        for error in refused:
            if error.code() in _REFUSED:
                raise ConfigError(
                    f"Kafka at {config.bootstrap_servers}: {_REFUSED[error.code()]}: {error.str()}"
                )


def kafka_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kafka")
    group.add_argument(
        "--bootstrap-servers", "-b", help="Kafka bootstrap servers [$DUROOT_BOOTSTRAP_SERVERS]"
    )
    group.add_argument("--topic-prefix", help="topic name prefix [$DUROOT_TOPIC_PREFIX]")
    group.add_argument(
        "--schema-registry-url", help="Confluent Schema Registry [$DUROOT_SCHEMA_REGISTRY_URL]"
    )
    group.add_argument(
        "-F",
        dest="config_file",
        metavar="FILE",
        help="librdkafka properties file, key=value lines; -X goes on top "
        "[$DUROOT_KAFKA_CONFIG]. Keep passwords here, not on the command line.",
    )
    group.add_argument(
        "-X", action="append", metavar="KEY=VALUE", help="librdkafka setting (repeatable)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
