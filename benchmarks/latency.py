"""Latency of a command's reply, at loads set from the capacity of this very set-up
(issue 17, item 2).

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

from benchmarks.workload import (
    REPO,
    HistoryShape,
    ProcessSet,
    fresh_topics,
    log,
    machine_load,
    wait_drained,
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
POINTS = (("10pct", 0.10), ("25pct", 0.25), ("50pct", 0.50), ("75pct", 0.75))
FIXED_RATE = 200.0
# Histograms of the processor, per transaction: (result key, metric name).
ATTRIBUTION = (
    ("batch_commands", "duroot_processor_batch_size_commands"),
    ("batch_ms", "duroot_processor_batch_duration_seconds"),
    ("decide_ms", "duroot_processor_decide_duration_seconds"),
    ("produce_ms", "duroot_processor_produce_duration_seconds"),
    ("send_offsets_ms", "duroot_processor_send_offsets_duration_seconds"),
    ("commit_ms", "duroot_processor_commit_duration_seconds"),
)
Results = dict[str, float]


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


def attribution(before: dict[str, float], after: dict[str, float]) -> Results:
    """Means per committed transaction between two scrapes (ms, or commands)."""
    out: Results = {}
    for key, name in ATTRIBUTION:
        count = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
        total = after.get(f"{name}_sum", 0) - before.get(f"{name}_sum", 0)
        scale = 1 if key == "batch_commands" else 1000
        out[key] = round(total / count * scale, 2) if count else math.nan
    out["transactions"] = after.get("duroot_processor_batch_size_commands_count", 0) - before.get(
        "duroot_processor_batch_size_commands_count", 0
    )
    return out


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


def measure(where: Setup, rate: float, seconds: float) -> Results:
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
    return (
        summarize(rate, achieved, sent, seen)
        | {"drain_wait_s": round(drained, 1)}
        | {f"attr_{k}": v for k, v in attribution(before, after).items()}
    )


def summarize(
    rate: float,
    achieved: float,
    sent: list[tuple[str, float]],
    seen: dict[str, tuple[float, float]],
) -> Results:
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
    return {
        "offered_per_s": round(rate),
        "achieved_offered_per_s": round(achieved),
        "commands": float(len(sent)),
        "missing_replies": float(missing),
        "bounded": float(bounded),
        "visible_p50_ms": round(percentile(ordered, 0.5), 1),
        "visible_p99_ms": round(percentile(ordered, 0.99), 1),
        "visible_p999_ms": round(percentile(ordered, 0.999), 1),
        "queue_p50_ms": round(percentile(queue, 0.5), 1),
        "queue_p99_ms": round(percentile(queue, 0.99), 1),
        "commit_p50_ms": round(percentile(commit, 0.5), 1),
        "commit_p99_ms": round(percentile(commit, 0.99), 1),
    }


def attribution_text(a: Results, prefix: str = "") -> str:
    """ "; per txn: 12.0 cmds, decide 0.40, ..." from `attribution`'s figures."""
    return (
        f"; per txn {a[prefix + 'batch_commands']:.1f} cmds in {a[prefix + 'batch_ms']:.1f} ms: "
        f"decide {a[prefix + 'decide_ms']:.2f}, produce {a[prefix + 'produce_ms']:.2f}, "
        f"send_offsets {a[prefix + 'send_offsets_ms']:.1f}, commit {a[prefix + 'commit_ms']:.1f}"
    )


def line(name: str, r: Results) -> str:
    return (
        f"{name}: {r['offered_per_s']:,.0f}/s p50 {r['visible_p50_ms']:.0f} ms "
        f"p99 {r['visible_p99_ms']:.0f} ms (queue p50 {r['queue_p50_ms']:.0f} / commit p50 "
        f"{r['commit_p50_ms']:.0f}){attribution_text(r, 'attr_')}"
        f"{'' if r['bounded'] else ', LAG UNBOUNDED'}"
    )


def capacity(where: Setup, start: float, step_s: float) -> tuple[float, list[Results]]:
    """The highest offered rate whose lag stays bounded, stepping up by a quarter
    (an unbounded step is run once more before it counts: the machine is shared)."""
    log(line("capacity warm-up (not counted)", measure(where, start, step_s / 2)))
    steps: list[Results] = []
    rate, knee = start, 0.0
    for _ in range(12):
        result = measure(where, rate, step_s)
        if not result["bounded"]:
            log(line("capacity step, once more", result))
            result = measure(where, rate, step_s)
        steps.append(result)
        log(line("capacity step", result))
        if not result["bounded"]:
            if knee:
                break
            rate /= 2  # already past it: look below
            if rate < 50:
                break
            continue
        knee = rate
        if len(steps) > 1 and not steps[-2]["bounded"]:
            break  # found from above
        rate *= 1.25
    return knee, steps


def run(servers: str, quick: bool, drain_max: float | None) -> dict[str, Results]:
    step_s = 5.0 if quick else 30.0
    point_s = 5.0 if quick else 15.0
    rounds = 1 if quick else 3
    results: dict[str, Results] = {}
    with ExitStack() as stack:
        setups = {
            name: stack.enter_context(setup(servers, options, seed=10 + i))
            for i, (name, options) in enumerate(VARIANTS.items())
        }
        load = machine_load("the latency runs")
        knee, steps = capacity(setups["tuned"], (drain_max or 10_000) / 4, step_s)
        results["capacity"] = {
            "knee_per_s": round(knee),
            "steps": float(len(steps)),
            **{f"step{i}_{k}": v for i, s in enumerate(steps) for k, v in s.items()},
            **{f"{k}_before": v for k, v in load.items()},
        }
        log(f"capacity in the latency set-up: {knee:,.0f}/s")
        points = [(name, fraction * knee) for name, fraction in POINTS]
        points.append(("200", FIXED_RATE))
        for name, rate in points:
            best: dict[str, Results] = {}
            for _ in range(rounds):  # taking turns
                for variant, where in setups.items():
                    result = measure(where, rate, point_s)
                    log(line(f"{name} {variant}", result))
                    if (
                        variant not in best
                        or result["visible_p99_ms"] < best[variant]["visible_p99_ms"]
                    ):
                        best[variant] = result
            for variant, result in best.items():
                results[f"at_{name}_{variant}"] = result
        results["capacity"].update({f"{k}_after": v for k, v in machine_load().items()})
    return results
