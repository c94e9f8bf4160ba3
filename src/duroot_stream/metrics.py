"""Prometheus metrics of the processor and the runner (`duroot_` prefix, bounded labels).

Each service gets its own `CollectorRegistry`, so several instances can live in
one process (tests) without counting into each other.
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from duroot_stream import serving
from duroot_stream.compiled import BUILD
from duroot_stream.serving import ALWAYS, Probes
from duroot_stream.version import VERSION

# How prometheus-client writes a bucket's bound (`le`); the library leaves it untyped.
_le: Callable[[float], str] = cast(Callable[[float], str], floatToGoString)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
GC_CHUNK_BUCKETS = (10, 100, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 1_000_000)
# Per-batch time of one step of a transaction: from tens of microseconds up.
STEP_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
)
DU_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)


class BatchHistogram(Collector):
    """A histogram observed a batch at a time, exposed as prometheus-client's
    `Histogram` is (the same `_bucket`, `_count` and `_sum` samples). Its `observe`
    takes about 1 us, which per command at each commit was about a twentieth of
    the processor's time per command."""

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name, self._documentation = name, documentation
        self._bounds = tuple(float(b) for b in buckets)  # and +Inf after them
        self._counts = [0] * (len(self._bounds) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()  # collect() runs in the metrics server's thread
        registry.register(self)

    def observe_many(self, values: Iterable[float]) -> None:
        bounds, counts, total = self._bounds, [0] * len(self._counts), 0.0
        for value in values:
            counts[bisect_left(bounds, value)] += 1  # a bucket holds values <= its bound
            total += value
        with self._lock:
            self._counts = [a + b for a, b in zip(self._counts, counts, strict=True)]
            self._sum += total

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = self._counts, self._sum
        cumulative, buckets = 0, []
        for bound, count in zip((*self._bounds, float("inf")), counts, strict=True):
            cumulative += count
            buckets.append((_le(bound), cumulative))
        yield HistogramMetricFamily(
            self._name, self._documentation, buckets=buckets, sum_value=total
        )


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        build_info(self.registry)
        r = self.registry
        self.commands = Counter(
            "duroot_processor_commands",
            "Commands handled, by command type and outcome "
            "(ok, duplicate, or the ErrorCode in lower case).",
            ["command", "outcome"],
            registry=r,
        )
        self.events = Counter(
            "duroot_processor_events",
            "Workflow events emitted, by event type.",
            ["event_type"],
            registry=r,
        )
        self.index_events = Counter(
            "duroot_processor_index_events",
            "Index events emitted, by event type.",
            ["event_type"],
            registry=r,
        )
        self.tombstones = Counter(
            "duroot_processor_tombstones",
            "Tombstones written, by topic (events, index).",
            ["topic"],
            registry=r,
        )
        self.dead_letters = Counter(
            "duroot_processor_dead_letters",
            "Messages sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=r,
        )
        self.transactions = Counter(
            "duroot_processor_transactions",
            "Kafka transactions, by result (committed, aborted).",
            ["result"],
            registry=r,
        )
        self.batch_size = Histogram(
            "duroot_processor_batch_size_commands",
            "Commands per transaction.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_duration = Histogram(
            "duroot_processor_batch_duration_seconds",
            "Time from a transaction's first command to its commit.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.command_latency = BatchHistogram(
            "duroot_processor_command_latency_seconds",
            "Time from a command's issued_at to the commit of its transaction.",
            LATENCY_BUCKETS,
            r,
        )

        # Where a transaction's time goes: one observation per committed batch.
        def step(name: str, what: str) -> Histogram:
            return Histogram(
                f"duroot_processor_{name}_duration_seconds",
                f"Per transaction: time {what}.",
                buckets=STEP_BUCKETS,
                registry=r,
            )

        self.decide_duration = step(
            "decide",
            "handling its commands in Python (decode, decide, encode, state), produce "
            "calls excluded",
        )
        self.produce_duration = step("produce", "in the producer's produce calls")
        self.send_offsets_duration = step(
            "send_offsets", "in send_offsets_to_transaction, retries included"
        )
        self.commit_duration = step("commit", "in commit_transaction, retries included")
        self.restore_duration = Gauge(
            "duroot_processor_restore_duration_seconds",
            "Duration of the last state restore, by partition.",
            ["partition"],
            registry=r,
        )
        self.restore_events = Counter(
            "duroot_processor_restore_events",
            "Events read while restoring state, by partition.",
            ["partition"],
            registry=r,
        )
        self.state_fallbacks = Counter(
            "duroot_processor_state_fallbacks",
            "Partitions restored from the events because their state records failed a "
            "check, by reason: no_marker, undecodable, beyond_events_end, events_without_state.",
            ["reason"],
            registry=r,
        )
        self.state_records = Counter(
            "duroot_processor_state_records",
            "Records written to the state topic, by kind: state (a changed workflow), "
            "tombstone (a deleted one), snapshot (a partition restored from the events), marker.",
            ["kind"],
            registry=r,
        )
        self.restore_in_progress = Gauge(
            "duroot_processor_restore_in_progress",
            "1 while a partition's state is being restored.",
            ["partition"],
            registry=r,
        )
        self.workflows = Gauge(
            "duroot_processor_workflows",
            "Workflows held in memory, by state.",
            ["state"],
            registry=r,
        )
        self.partitions = Gauge(
            "duroot_processor_partitions_owned",
            "Command partitions this instance owns.",
            registry=r,
        )
        self.consumer_lag = Gauge(
            "duroot_processor_consumer_lag_messages",
            "Commands not yet consumed, by partition (librdkafka statistics).",
            ["partition"],
            registry=r,
        )
        self.gc_commands = Counter(
            "duroot_processor_gc_commands",
            "Garbage-collection commands issued (counted when their transaction commits), "
            "by command.",
            ["command"],
            registry=r,
        )
        self.gc_chunk_records = Histogram(
            "duroot_processor_gc_chunk_records",
            "Records garbage collection put into one transaction (a chunk, at most "
            "--gc-chunk-records; one command's records are never split, so a Delete of a "
            "longer history is a chunk of its own).",
            buckets=GC_CHUNK_BUCKETS,
            registry=r,
        )
        self.reply_header_errors = Counter(
            "duroot_processor_reply_header_errors",
            "Commands whose reply header could not be read (the reply went to the replies "
            "topic, keyed by command id), by header; see reply_route_errors for every reason.",
            ["header"],
            registry=r,
        )
        self.reply_route_errors = Counter(
            "duroot_processor_reply_route_errors",
            "Commands whose reply route was not followed (the reply went to the replies "
            "topic, keyed by command id, with a reply-route-error header), by reason.",
            ["reason"],
            registry=r,
        )
        self.takeover_duration = Histogram(
            "duroot_processor_takeover_duration_seconds",
            "From the assignment of partitions to this instance until it answers them: "
            "waiting for (or fencing) a previous owner's transaction, and the restore.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120),
            registry=r,
        )
        self.standby_partitions = Gauge(
            "duroot_processor_standby_partitions",
            "Partitions of other instances whose state this one keeps current (--standbys).",
            registry=r,
        )
        self.standby_states = Gauge(
            "duroot_processor_standby_states",
            "State records held for the partitions of other instances (--standbys).",
            registry=r,
        )
        self.standby_takeovers = Counter(
            "duroot_processor_standby_takeovers",
            "Partitions taken over whose state a standby of this instance had read ahead.",
            registry=r,
        )
        self.previous_owners_fenced = Counter(
            "duroot_processor_previous_owners_fenced",
            "Transactions of a dead previous owner of partitions this instance took over, "
            "ended by this instance (init_transactions with the owner's transactional.id) "
            "instead of waiting for the broker's transaction timeout.",
            registry=r,
        )
        self.producer_renewals = Counter(
            "duroot_processor_producer_renewals",
            "Transactional producers abandoned for a new one with the same transactional.id "
            "after a transactional call timed out (after a broker restart, say).",
            registry=r,
        )
        self.unstable_messages = Gauge(
            "duroot_processor_unstable_messages",
            "Records of an owned events partition past its last stable offset: held back "
            "from read_committed readers by an open transaction, by partition.",
            ["partition"],
            registry=r,
        )
        self.unstable_seconds = Gauge(
            "duroot_processor_unstable_seconds",
            "How long an owned events partition's last stable offset has stood still below "
            "its high watermark (0 when it moves or reaches it): a hanging transaction once "
            "past the transaction timeout plus the coordinator's abort check, by partition.",
            ["partition"],
            registry=r,
        )

    def on_statistics(self, stats_json: str) -> None:
        """librdkafka `stats_cb`: consumer lag per partition of the consumed topic."""
        stats: dict[str, Any] = json.loads(stats_json)
        for topic in stats.get("topics", {}).values():
            for pid, part in topic.get("partitions", {}).items():
                lag = part.get("consumer_lag", -1)
                # Offsets are committed through the transaction, so librdkafka knows no
                # committed offset (consumer_lag -1): the lag is from the position.
                if lag < 0 and part.get("app_offset", -1) >= 0 and part.get("ls_offset", -1) >= 0:
                    lag = part["ls_offset"] - part["app_offset"]
                if pid != "-1" and lag >= 0 and part.get("fetch_state") == "active":
                    self.consumer_lag.labels(pid).set(lag)


class RunnerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        build_info(self.registry)
        r = self.registry
        self.index_unstable = Gauge(
            "duroot_runner_index_unstable_messages",
            "Index records past the last stable offset, by partition: held back from "
            "read_committed readers by an open transaction (librdkafka statistics).",
            ["partition"],
            registry=r,
        )
        self.du_runs = Counter(
            "duroot_runner_du_runs",
            "du runs, by outcome (ok, failed, timeout, interrupted, rejected).",
            ["outcome"],
            registry=r,
        )
        self.du_duration = Histogram(
            "duroot_runner_du_duration_seconds",
            "Duration of du runs.",
            buckets=DU_BUCKETS,
            registry=r,
        )
        self.lines_published = Counter(
            "duroot_runner_lines_published", "du lines published as Append paths.", registry=r
        )
        self.refusals = Counter(
            "duroot_runner_refusals",
            "Workflows refused (root outside the configured roots, "
            "symlink escape, relative path...), by reason.",
            ["reason"],
            registry=r,
        )
        self.active_runs = Gauge("duroot_runner_active_du_runs", "du runs in progress.", registry=r)
        self.errors = Counter(
            "duroot_runner_errors",
            "Unexpected errors handling a workflow (bugs), by what was done with the "
            "workflow: failed (Fail sent), left (left as it is for the state check).",
            ["action"],
            registry=r,
        )

    def on_index_statistics(self, stats_json: str) -> None:
        stats: dict[str, Any] = json.loads(stats_json)
        for topic in stats.get("topics", {}).values():
            for pid, part in topic.get("partitions", {}).items():
                high, stable = part.get("hi_offset", -1), part.get("ls_offset", -1)
                if pid != "-1" and high >= 0 and stable >= 0:
                    self.index_unstable.labels(pid).set(high - stable)


def serve(
    registry: CollectorRegistry, port: int, addr: str = "127.0.0.1", probes: Probes = ALWAYS
) -> int:
    """Expose `/metrics`, `/healthz` and `/readyz` on `addr:port` (0 = a free port);
    returns the port."""
    return serving.serve(registry, port, addr, probes)


def build_info(registry: CollectorRegistry) -> None:
    """`duroot_build_info{version,build} 1`: which version answers on this port, and
    whether its core runs compiled or as pure Python (compiled.py)."""
    Gauge(
        "duroot_build_info",
        "The running duroot-stream version and build (compiled or pure).",
        ["version", "build"],
        registry=registry,
    ).labels(VERSION, BUILD).set(1)
