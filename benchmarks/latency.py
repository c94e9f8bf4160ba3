"""Latency of a command's reply, at loads set from the capacity of this very set-up.

One `duroot-stream processor` (a subprocess, exactly-once, 6 partitions,
1,000 workflows with a history) per compared setting, both running, used in
turn. The client is two more processes (`benchmarks.latency_client`): one
sends Appends at a fixed rate, open loop, the other reads the replies as
`DuRootClient` does. Each command's time is split at the reply record's
timestamp, set when the processor produced the reply (the clocks are the
same machine's):

- queueing: sent → reply produced (delivery, fetch, waiting in the batch,
  deciding);
- commit: reply produced → visible to the client (the rest of the batch,
  `send_offsets_to_transaction`, `commit_transaction`, the client's fetch).

1. Capacity: the offered rate steps up by a quarter from a quarter of the
   drain's maximum (or 1,000/s), `step_s` each, until lag is no longer
   bounded: a command sent in the last fifth of the step waits more than
   twice as long (plus 200 ms) as one sent in the second fifth, or over a
   second, replies are missing, or the sender falls behind (twice in a row: the machine is
   shared). The knee is the last bounded step; a warm-up run comes first.
2. The curve: 10, 25, 50 and 75 % of the knee, and 200/s, each with the
   processor's transactional producer as tuned (`tuned`) and with
   librdkafka's default retry backoff (`default`, `-X retry.backoff.ms=100
   -X retry.backoff.max.ms=1000`), taking turns, best of three (lowest p99).

Every run starts with the processor caught up (its group's committed
offsets at the end of the commands topic). Each run also reports the
processor's attribution: per transaction, the mean batch size and time in
decide (Python), produce, send_offsets_to_transaction and
commit_transaction, from the deltas of its /metrics histograms.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.drain import ProcessSet, wait_drained
from benchmarks.results import (
    Attribution,
    Capacity,
    LatencyPoint,
    LatencyResult,
    LatencyRun,
)
from benchmarks.workload import (
    REPO,
    HistoryShape,
    fresh_topics,
    log,
    machine_load,
    workflow_ids,
    write_histories,
)
from duroot_stream.config import KafkaConfig
from duroot_stream.wire import Topics

from . import latency_client

PARTITIONS = 6
REPLY_PARTITION = 0
VARIANTS: dict[str, tuple[str, ...]] = {
    "tuned": (),
    "default": ("-X", "retry.backoff.ms=100", "-X", "retry.backoff.max.ms=1000"),
}
FRACTIONS = (0.10, 0.25, 0.50, 0.75)  # of the capacity
FIXED_RATE = 200.0
# The processor's histograms, each observed once per committed transaction.
BATCH_SIZE = "duroot_processor_batch_size_commands"
ATTRIBUTION_MS = (
    "duroot_processor_batch_duration_seconds",
    "duroot_processor_decide_duration_seconds",
    "duroot_processor_produce_duration_seconds",
    "duroot_processor_send_offsets_duration_seconds",
    "duroot_processor_commit_duration_seconds",
)


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    return values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))]


def scrape(port: int) -> dict[str, float]:
    """Sums and counts of the processor's histograms, from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count")):
                out[sample.name] = sample.value
    return out


def attribution(before: dict[str, float], after: dict[str, float]) -> Attribution:
    """Means per committed transaction between two scrapes (ms, or commands)."""

    def delta(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    def mean(name: str, scale: float) -> float:
        count = delta(f"{name}_count")
        return round(delta(f"{name}_sum") / count * scale, 2) if count else math.nan

    batch, decide, produce, send_offsets, commit = (mean(n, 1000) for n in ATTRIBUTION_MS)
    return Attribution(
        batch_commands=mean(BATCH_SIZE, 1),
        batch_ms=batch,
        decide_ms=decide,
        produce_ms=produce,
        send_offsets_ms=send_offsets,
        commit_ms=commit,
        transactions=delta(f"{BATCH_SIZE}_count"),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Setup:
    """Topics with histories and one processor (its /metrics on `port`)."""

    config: KafkaConfig
    port: int
    workflows_seed: int
    group: str


@contextmanager
def setup(
    servers: str, options: Sequence[str], seed: int, env: Mapping[str, str] = {}
) -> Iterator[Setup]:
    config = fresh_topics(servers, PARTITIONS)
    workflows = workflow_ids(latency_client.WORKFLOWS, seed=seed)
    shape = HistoryShape(1, 1, completed=False)
    write_histories([(Topics(config.topic_prefix).events, PARTITIONS)], config, workflows, shape)
    port, group = free_port(), f"{config.topic_prefix}group"
    with ProcessSet(config, group, env) as procs:
        procs.start_processors(1, "--metrics-port", str(port), *options)
        procs.wait_stable(PARTITIONS)
        yield Setup(config, port, seed, group)


def _client(mode: str, config: KafkaConfig, out: Path, *options: str) -> list[str]:
    return [
        sys.executable, "-m", "benchmarks.latency_client", mode,
        "--bootstrap-servers", config.bootstrap_servers, "--topic-prefix", config.topic_prefix,
        "--reply-partition", str(REPLY_PARTITION), "--out", str(out), *options,
    ]  # fmt: skip


def measure(where: Setup, rate: float, seconds: float) -> LatencyRun:
    """One open-loop run at `rate` for `seconds`: latencies, boundedness, attribution."""
    count = int(rate * seconds)
    # A run starts with nothing queued: a backlog left by the last one would both
    # delay this one's replies and be counted by the receiver as its own.
    drained = wait_drained(where.config, where.group, PARTITIONS, timeout=300)
    tmp = Path(tempfile.mkdtemp(prefix="duroot-latency-"))
    sent_file, seen_file = tmp / "sent.jsonl", tmp / "seen.jsonl"
    before = scrape(where.port)
    receive_args = ("--count", str(count), "--timeout", str(seconds + 60))
    receiver = subprocess.Popen(
        _client("receive", where.config, seen_file, *receive_args),
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        if receiver.stdout.readline().strip() != "ready":
            raise RuntimeError("the latency receiver did not start")
        send_args = (
            "--partitions", str(PARTITIONS), "--rate", str(rate), "--seconds", str(seconds),
            "--seed", str(where.workflows_seed), "--tag", uuid.uuid4().hex[:6],
        )  # fmt: skip
        subprocess.run(_client("send", where.config, sent_file, *send_args), cwd=REPO, check=True)
        receiver.wait(seconds + 120)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    after = scrape(where.port)
    with open(sent_file, encoding="utf-8") as f:
        achieved = float(json.loads(f.readline())["achieved_per_s"])
        sent = [(str(key), float(at)) for key, at in map(json.loads, f)]
    with open(seen_file, encoding="utf-8") as f:
        seen = {key: (visible, produced) for key, visible, produced in map(json.loads, f)}
    return summarize(rate, achieved, sent, seen, round(drained, 1), attribution(before, after))


def summarize(
    rate: float,
    achieved: float,
    sent: list[tuple[str, float]],
    seen: dict[str, tuple[float, float]],
    drain_wait_s: float,
    per_transaction: Attribution,
) -> LatencyRun:
    warm = len(sent) // 20  # the first 5 % are start-up
    measured = sent[warm:]
    visible = [(seen[k][0] - t) * 1000 for k, t in measured if k in seen]
    queue = sorted((seen[k][1] - t) * 1000 for k, t in measured if k in seen)
    commit = sorted((seen[k][0] - seen[k][1]) * 1000 for k, t in measured if k in seen)
    missing = sum(1 for k, _ in measured if k not in seen)
    # Bounded lag: late commands wait about as long as earlier ones.
    fifth = max(1, len(visible) // 5)
    early = sorted(visible[fifth : 2 * fifth])
    late = sorted(visible[-fifth:])
    early_p50, late_p50 = percentile(early, 0.5), percentile(late, 0.5)
    bounded = (
        missing <= len(measured) // 100
        and achieved >= 0.95 * rate
        and late_p50 <= min(2 * early_p50 + 200, 1000)
    )
    ordered = sorted(visible)

    def ms(values: Sequence[float], q: float) -> float:
        return round(percentile(values, q), 1)

    return LatencyRun(
        offered_per_s=round(rate),
        achieved_offered_per_s=round(achieved),
        commands=len(sent),
        missing_replies=missing,
        bounded=bounded,
        visible_p50_ms=ms(ordered, 0.5),
        visible_p99_ms=ms(ordered, 0.99),
        visible_p999_ms=ms(ordered, 0.999),
        queue_p50_ms=ms(queue, 0.5),
        queue_p99_ms=ms(queue, 0.99),
        commit_p50_ms=ms(commit, 0.5),
        commit_p99_ms=ms(commit, 0.99),
        drain_wait_s=drain_wait_s,
        attribution=per_transaction,
    )


def attribution_text(a: Attribution) -> str:
    """ "; per txn 12.0 cmds in 9.1 ms: decide 0.40, ..." """
    return (
        f"; per txn {a.batch_commands:.1f} cmds in {a.batch_ms:.1f} ms: "
        f"decide {a.decide_ms:.2f}, produce {a.produce_ms:.2f}, "
        f"send_offsets {a.send_offsets_ms:.1f}, commit {a.commit_ms:.1f}"
    )


def line(name: str, r: LatencyRun) -> str:
    return (
        f"{name}: {r.offered_per_s:,.0f}/s p50 {r.visible_p50_ms:.0f} ms "
        f"p99 {r.visible_p99_ms:.0f} ms (queue p50 {r.queue_p50_ms:.0f} / commit p50 "
        f"{r.commit_p50_ms:.0f}){attribution_text(r.attribution)}"
        f"{'' if r.bounded else ', LAG UNBOUNDED'}"
    )


def capacity(where: Setup, start: float, step_s: float) -> tuple[float, list[LatencyRun]]:
    """The highest offered rate whose lag stays bounded, stepping up by a quarter
    (an unbounded step is run once more before it counts: the machine is shared)."""
    log(line("capacity warm-up (not counted)", measure(where, start, step_s / 2)))
    steps: list[LatencyRun] = []
    rate, knee = start, 0.0
    for _ in range(12):
        result = measure(where, rate, step_s)
        if not result.bounded:
            log(line("capacity step, once more", result))
            result = measure(where, rate, step_s)
        steps.append(result)
        log(line("capacity step", result))
        if not result.bounded:
            if knee:
                break
            rate /= 2  # already past it: look below
            if rate < 50:
                break
            continue
        knee = rate
        if len(steps) > 1 and not steps[-2].bounded:
            break  # found from above
        rate *= 1.25
    return knee, steps


def lowest_p99(runs: Sequence[LatencyRun]) -> LatencyRun:
    """Of runs at the same rate, the one least disturbed by the shared machine."""
    return min(runs, key=lambda r: r.visible_p99_ms)


def run(servers: str, quick: bool, drain_max: float | None) -> LatencyResult:
    step_s = 5.0 if quick else 30.0
    point_s = 5.0 if quick else 15.0
    rounds = 1 if quick else 3
    with ExitStack() as stack:
        setups = {
            variant: stack.enter_context(setup(servers, options, seed=10 + i))
            for i, (variant, options) in enumerate(VARIANTS.items())
        }
        load = machine_load("the latency runs")
        knee, steps = capacity(setups["tuned"], (drain_max or 10_000) / 4, step_s)
        log(f"capacity in the latency set-up: {knee:,.0f}/s")

        def point(rate: float, name: str) -> LatencyPoint:
            """Both settings at `rate`, taking turns, best of `rounds` each."""
            runs: dict[str, list[LatencyRun]] = {variant: [] for variant in setups}
            for _ in range(rounds):
                for variant, where in setups.items():
                    runs[variant].append(measure(where, rate, point_s))
                    log(line(f"{name} {variant}", runs[variant][-1]))
            return LatencyPoint(lowest_p99(runs["tuned"]), lowest_p99(runs["default"]))

        at_10, at_25, at_50, at_75 = (point(f * knee, f"{f:.0%}") for f in FRACTIONS)
        at_200 = point(FIXED_RATE, f"{FIXED_RATE:.0f}/s")
        capacity_result = Capacity(knee, tuple(steps), load, machine_load())
    return LatencyResult(capacity_result, at_10, at_25, at_50, at_75, at_200)
