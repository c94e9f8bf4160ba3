"""Failover under load: how long workflows go unanswered when a processor crashes,
stops, restarts or joins.

Set-up: a local broker, topics of 6 partitions, a history of `--events` events
(default 1,000,000; `--quick` 100,000) written straight to the events topic as
the processor writes it (`workload.write_histories`): 120 running workflows of
equal length, about a sixth of them per partition. Each run starts two
processors (`duroot-stream processor`, default settings, instances p0 and p1,
each a process; `benchmarks.failover_fleet`), waits until the group holds every
partition and every partition answers, and starts the load client
(`benchmarks.failover_client`, two processes): Appends at 200 commands/s, open
loop, round robin over the 120 workflows, and a read_committed reader of the
replies recording when each became visible. After a warm-up the event:

- crash: SIGKILL of p0 or p1 (in turns), not restarted (the host is gone);
- stop: SIGTERM of one, not restarted;
- restart: SIGTERM of one and, once it has exited, the same instance started
  again (one step of a rolling restart);
- join: a third instance, p2, starts;
- steady (only when asked for): no event, a fixed time under load; any
  assignment then is a false eviction.

The observation ends when the group is stable with the instances expected
after the event holding every partition, and every partition has answered a
command sent in the last 2 s within 1 s, continuously for 5 s (at the latest
150 s after the event). The sender stops; replies still due are awaited (15 s).

Figures, per commands partition (times from the event, in seconds):

- waited_s, "unanswered for": the longest time one command to the partition
  waited for its reply to become visible, counting from the event for a
  command sent before it (outstanding at the event) and from its sending for
  one sent after. A command never answered counts to the end of the
  observation (and is counted as missing).
- produced_waited_s: the same, counted to when the processor produced the reply
  (its record timestamp) instead of to when the reader saw it. All replies go
  to one reply partition, as one client's do: a dead owner's open transaction
  with a reply in it holds back every later reply there, the survivors'
  committed ones too, until the broker aborts it. waited_s well above
  produced_waited_s on the heir's own partitions is that, not a busy heir.
- silent_s: the longest interval from the event to the end of the observation
  in which no reply of the partition became visible (at 200 commands/s a
  partition receives one about every 30 ms); back_after_s: from the event to
  the end of that interval, i.e. when the partition answered again.
- moved: the partition was the victim's before the event, or another instance
  holds it after (from the group's description: who held what just before the
  event, and at the end). The others are the heir's (the survivors') own.

Per run the longest waited_s (and produced_waited_s) of the moved partitions and
of the others (the table's "moved s", "own s" and "produced" moved/own); from
the processors' logs, each restore after the event ("partitions restored":
when it began, i.e. detection plus rebalance, how long it took, and whether it
logged "restore waiting for an open transaction": the previous owner's
transaction left open, which the broker aborts only after
transaction.timeout.ms, 40 s, plus its abort check), the assignments and
revocations logged before and after the event, and librdkafka's warnings of
session timeouts, unknown members or fencing.

    python -m benchmarks.failover [--quick] [--events N] [--runs 5] [--other-runs 3]
        [--scenarios crash,stop,restart,join] [-X key=value ...] [--broker key=value ...]
        [--group-protocol classic|consumer] [--standbys N] [--name failover]

`make bench-failover` runs the defaults; the table goes to stdout, the runs to
bench-results/<name>.json (`FailoverResult`).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.failover_figures import (
    PARTITIONS,
    Timeline,
    evictions,
    partition_figures,
    read_log,
    rebalances,
    takeovers,
)
from benchmarks.failover_fleet import Fleet, Load
from benchmarks.results import FailoverResult, FailoverRun
from benchmarks.workload import (
    HistoryShape,
    bootstrap,
    fresh_topics,
    log,
    machine_load,
    workflow_ids,
    write_histories,
    write_report,
)
from duroot_stream.config import KafkaConfig
from duroot_stream.wire import Topics

WORKFLOWS = 120
SEED = 7
RATE = 200.0
SCENARIOS = ("crash", "stop", "restart", "join")
KIP848_MODULE = "benchmarks.kip848_processor"
START_TIMEOUT_S = 300.0  # two processors restoring 1,000,000 events on a busy machine
SETTLE_S = 5.0
ANSWER_WITHIN_S = 1.0
MAX_OBSERVE_S = 150.0


@dataclass(frozen=True)
class Options:
    events: int
    crash_runs: int
    other_runs: int
    scenarios: tuple[str, ...]
    warmup_s: float
    steady_s: float
    group_protocol: str
    processor_settings: tuple[str, ...]
    broker_settings: tuple[str, ...]
    standbys: int = 0


@dataclass(frozen=True)
class Place:
    """Where the runs happen: the topics, the group, the log directory."""

    config: KafkaConfig
    group: str
    logs: Path
    options: Options


def write_history(config: KafkaConfig, events: int) -> int:
    started = time.monotonic()
    shape = HistoryShape(events // WORKFLOWS, paths_per_append=10, completed=False)
    topic = Topics(config.topic_prefix).events
    written = write_histories(
        [(topic, PARTITIONS)], config, workflow_ids(WORKFLOWS, seed=SEED), shape
    )
    took = time.monotonic() - started
    log(f"history: {written:,} events of {WORKFLOWS} workflows in {took:.0f} s")
    return written


def wait_answering(timeline: Timeline, fleet: Fleet, since: float, timeout: float) -> float:
    """Until every partition answered a command sent after `since`; the time then."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        timeline.update()
        fleet.check_alive(set(fleet.procs))
        if len(timeline.answering(since, ANSWER_WITHIN_S)) == PARTITIONS:
            return time.time()
        time.sleep(0.3)
    raise RuntimeError(f"not every partition answered within {timeout:.0f} s")


def event(fleet: Fleet, scenario: str, victim: str) -> set[str]:
    """Do what `scenario` does to `victim`; the instances expected afterwards."""
    others = set(fleet.procs) - {victim}
    if scenario == "crash":
        fleet.signal(victim, signal.SIGKILL)
        return others
    if scenario == "stop":
        fleet.signal(victim, signal.SIGTERM)
        return others
    if scenario == "restart":
        fleet.signal(victim, signal.SIGTERM)
        log(f"  {victim} exited {fleet.wait_exit(victim):.1f} s after SIGTERM; starting it again")
        fleet.start(victim)
        return {*others, victim}
    if scenario == "join":
        fleet.start(victim)
        return {*others, victim}
    return set(fleet.procs)  # steady


def observe(
    place: Place, fleet: Fleet, timeline: Timeline, scenario: str, at: float, expected: set[str]
) -> tuple[float, bool]:
    """Follow the run after the event until it settled (see the module docstring);
    the end of the observation and whether it settled."""
    limit = place.options.steady_s if scenario == "steady" else MAX_OBSERVE_S
    settled_since: float | None = None
    shown = at
    while (now := time.time()) < at + limit:
        time.sleep(0.5)
        timeline.update()
        fleet.check_alive(expected)
        if scenario == "steady":
            continue
        ok, held = fleet.settled(expected)
        answering = timeline.answering(now - 2.0, ANSWER_WITHIN_S)
        if ok and len(answering) == PARTITIONS:
            settled_since = settled_since or now
            if now - settled_since >= SETTLE_S:
                return now, True
        else:
            settled_since = None
        if now - shown >= 5:
            shown = now
            owners = " ".join(f"{p}:{held.get(p, '-')}" for p in range(PARTITIONS))
            log(f"  {now - at:4.0f} s: answering {sorted(answering)}; held {owners}")
    return time.time(), scenario == "steady"


def one_run(place: Place, scenario: str, run: int) -> FailoverRun:
    tag = f"{scenario}{run}"
    options = place.options
    extra = tuple(a for kv in options.processor_settings for a in ("-X", kv))
    extra += ("--standbys", str(options.standbys))
    victim = "p2" if scenario == "join" else "" if scenario == "steady" else f"p{run % 2}"
    with Fleet(place.config, place.group, place.logs, tag, extra) as fleet:
        if options.group_protocol == "consumer":
            fleet.module = KIP848_MODULE
        for instance in ("p0", "p1"):
            fleet.start(instance)
        fleet.wait_settled({"p0", "p1"}, START_TIMEOUT_S)
        with Load(place.config, place.logs, tag, WORKFLOWS, SEED, RATE) as load:
            timeline = load.timeline
            steady_from = wait_answering(timeline, fleet, time.time(), START_TIMEOUT_S)
            time.sleep(options.warmup_s)
            _, before = fleet.owners()
            at = time.time()
            expected = event(fleet, scenario, victim)
            end, settled = observe(place, fleet, timeline, scenario, at, expected)
            _, after = fleet.owners()
            load.finish()
        fleet.stop()
    lines = sorted(
        (x for name in fleet.procs for x in read_log(fleet.log_path(name), name)),
        key=lambda x: x.at,
    )
    moved = {
        p for p in range(PARTITIONS) if before.get(p) == victim or after.get(p) != before.get(p)
    }
    partitions = tuple(
        partition_figures(
            timeline,
            p,
            at,
            end,
            steady_from,
            (before.get(p, ""), after.get(p, "")),
            p in moved,
        )
        for p in range(PARTITIONS)
    )
    evicted = evictions(lines, steady_from)
    return FailoverRun(
        scenario=scenario,
        run=run,
        victim=victim,
        moved_waited_s=max((x.waited_s for x in partitions if x.moved), default=None),
        own_waited_s=max((x.waited_s for x in partitions if not x.moved), default=None),
        moved_produced_s=max((x.produced_waited_s for x in partitions if x.moved), default=None),
        own_produced_s=max((x.produced_waited_s for x in partitions if not x.moved), default=None),
        settled=settled,
        observed_s=round(end - at, 1),
        sent_per_s=round(timeline.rate(), 1),
        rebalances_before=rebalances(lines, steady_from, at),
        rebalances_after=rebalances(lines, at, end),
        eviction_lines=len(evicted),
        eviction_samples=tuple(evicted[:5]),
        partitions=partitions,
        takeovers=tuple(takeovers(lines, at, end)),
    )


def run(options: Options) -> FailoverResult:
    broker = dict(kv.split("=", 1) for kv in options.broker_settings)
    plan = [
        (s, n)
        for s in options.scenarios
        for n in range(1, 1 + (options.crash_runs if s == "crash" else options.other_runs))
    ]
    with bootstrap(settings=broker) as servers:
        config = fresh_topics(servers, PARTITIONS)
        events = write_history(config, options.events)
        logs = Path(tempfile.mkdtemp(prefix="duroot-failover-"))
        place = Place(config, f"{config.topic_prefix}group", logs, options)
        log(f"failover: {len(plan)} runs; processor logs and client files in {logs}")
        load = machine_load("the failover runs")
        runs = []
        for scenario, n in plan:
            log(f"{scenario} run {n}: starting p0 and p1")
            runs.append(one_run(place, scenario, n))
            log(row(runs[-1]))
    return FailoverResult(
        events=events,
        workflows=WORKFLOWS,
        rate_per_s=RATE,
        group_protocol=options.group_protocol,
        processor_settings=options.processor_settings,
        broker_settings=options.broker_settings,
        standbys=options.standbys,
        runs=tuple(runs),
        load_before=load,
    )


HEADER = (
    f"{'scenario':<9}{'run':>4} {'victim':<7}{'moved s':>9}{'own s':>8}{'produced':>10}"
    f"{'takeover s':>11}{'restore s':>10} {'txn wait':<9}{'rebal.':>7}{'evict.':>7}"
)


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def row(r: FailoverRun) -> str:
    first = min((t.assigned_after_s for t in r.takeovers), default=None)
    restore = max((t.restore_s for t in r.takeovers), default=None)
    waited = any(t.waited_for_transaction for t in r.takeovers)
    return (
        f"{r.scenario:<9}{r.run:>4} {r.victim:<7}{seconds(r.moved_waited_s):>9}"
        f"{seconds(r.own_waited_s):>8}"
        f"{seconds(r.moved_produced_s) + '/' + seconds(r.own_produced_s):>10}"
        f"{seconds(first):>11}{seconds(restore):>10} "
        f"{'yes' if waited else 'no':<9}{r.rebalances_before:>3}/{r.rebalances_after:<3}"
        f"{r.eviction_lines:>7}{'' if r.settled else '  NOT SETTLED'}"
    )


def table(result: FailoverResult) -> str:
    lines = [HEADER, *(row(r) for r in result.runs), ""]
    for scenario in dict.fromkeys(r.scenario for r in result.runs):
        runs = [r for r in result.runs if r.scenario == scenario]
        moved = [r.moved_waited_s for r in runs if r.moved_waited_s is not None]
        own = ", ".join(seconds(r.own_waited_s) for r in runs)
        txn = sum(1 for r in runs if any(t.waited_for_transaction for t in r.takeovers))
        unanswered = (
            f"moved partitions unanswered for {', '.join(map(seconds, moved))} s "
            f"(median {statistics.median(moved):.1f})"
            if moved
            else "no partition moved"
        )
        evicted = sum(r.eviction_lines for r in runs)
        lines.append(
            f"{scenario}: {unanswered}; the others up to {own} s; a restore waited for an "
            f"open transaction in {txn} of {len(runs)}; {evicted} eviction lines"
        )
    return "\n".join(lines)


def parse(argv: Sequence[str]) -> tuple[Options, str, bool]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.failover")
    parser.add_argument("--quick", action="store_true", help="100,000 events, 5 s warm-up")
    parser.add_argument("--events", type=int, help="history (default 1,000,000)")
    parser.add_argument("--runs", type=int, default=5, help="crash runs")
    parser.add_argument("--other-runs", type=int, default=3, help="runs of the other scenarios")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="of crash, stop, restart, join, steady")  # fmt: skip
    parser.add_argument("--steady-s", type=float, default=120.0, help="length of a steady run")
    parser.add_argument("-X", action="append", default=[], metavar="KEY=VALUE",
                        help="a processor setting (-X of duroot-stream processor)")  # fmt: skip
    parser.add_argument("--broker", action="append", default=[], metavar="KEY=VALUE",
                        help="a server property of the local broker")  # fmt: skip
    parser.add_argument("--group-protocol", choices=("classic", "consumer"), default="classic")
    parser.add_argument("--standbys", type=int, default=0, help="--standbys of every processor")
    parser.add_argument("--name", default="failover", help="bench-results/<name>.json")
    args = parser.parse_args(argv)
    scenarios = tuple(args.scenarios.split(","))
    unknown = set(scenarios) - {*SCENARIOS, "steady"}
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}")
    settings = list(args.X)
    if args.group_protocol == "consumer":
        settings.append("group.protocol=consumer")
    options = Options(
        events=args.events or (100_000 if args.quick else 1_000_000),
        crash_runs=args.runs,
        other_runs=args.other_runs,
        scenarios=scenarios,
        warmup_s=5.0 if args.quick else 10.0,
        steady_s=args.steady_s,
        group_protocol=args.group_protocol,
        processor_settings=tuple(settings),
        broker_settings=tuple(args.broker),
        standbys=args.standbys,
    )
    return options, args.name, args.quick


def main(argv: Sequence[str] = ()) -> FailoverResult:
    options, name, quick = parse(argv)
    # Stopped with SIGTERM (or SIGINT, even from the background), the processes and
    # the broker it started are stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    result = run(options)
    print(table(result))
    print(f"wrote {write_report(name, quick, result)}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
