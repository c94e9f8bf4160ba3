"""What the four reliability scenarios share: sizes, the run, the settle, the verdict."""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest

from duroot_stream.config import KafkaConfig
from duroot_stream.local.broker import ABORT_CHECK_MS
from duroot_stream.processor.kafka_clients import TRANSACTION_TIMEOUT_MS
from duroot_stream.wire import Topics, create_topics
from tests.kafka_helpers import wait_until
from tests.reliability.live import LiveReader
from tests.reliability.malformed import MalformedFactory
from tests.reliability.supervisor import TERM_TIMEOUT_S, Supervisor
from tests.reliability.topic_reads import (
    READ_TIMEOUT_S,
    open_transactions,
    read_topic,
    unconsumed_commands,
)
from tests.reliability.verdicts import Report
from tests.reliability.verify import replay
from tests.reliability.walker import Walker
from tests.reliability.workload import Driver, ReplyClient

PARTITIONS = 6
CLIENT_PARTITIONS = 2  # of each client's own reply topic
START_S = 300.0  # brokers, topics, the first instances: a generous bound
# The longest transaction timeout a scenario sets (-X in test_zombie_stall.py).
LONGEST_TRANSACTION_TIMEOUT_S = max(TRANSACTION_TIMEOUT_MS / 1000, 60.0)
SETTLE_SLACK_S = 15.0  # the coordinator's markers and the sampling on a loaded machine
FAULT_POINTS = "0.1,0.3,0.5,0.7"  # faults strike when these shares are answered
RESULTS_DIR = Path(__file__).resolve().parents[2] / "bench-results"
# Of a Report: not figures, or Counters (asdict would make their items the keys).
_NOT_FIGURES = ("problems", "errors", "reasons", "dead_letter_reasons")


@dataclass(frozen=True)
class Scale:
    """Sizes of a run: `DUROOT_RELIABILITY_SCALE=full|small`, each figure overridable."""

    name: str
    commands: int
    workflows: int
    malformed: int
    fault_points: tuple[float, ...]  # shares of the load answered at which faults strike
    seed: int

    @classmethod
    def from_env(cls) -> Scale:
        name = os.environ.get("DUROOT_RELIABILITY_SCALE", "full")
        if name not in ("full", "small"):
            raise pytest.UsageError(f"DUROOT_RELIABILITY_SCALE={name!r}: full or small")
        full = name == "full"
        env = os.environ.get

        points = tuple(float(p) for p in env("DUROOT_RELIABILITY_FAULTS", FAULT_POINTS).split(","))
        if not points or not all(0 < p < 1 for p in points):
            raise pytest.UsageError(f"DUROOT_RELIABILITY_FAULTS={points}: shares in (0, 1)")
        return cls(
            name=name,
            commands=int(env("DUROOT_RELIABILITY_COMMANDS", 100_000 if full else 15_000)),
            workflows=int(env("DUROOT_RELIABILITY_WORKFLOWS", 1_000 if full else 150)),
            malformed=int(env("DUROOT_RELIABILITY_MALFORMED", 10_000)),
            fault_points=points,
            seed=int(env("DUROOT_RELIABILITY_SEED", random.randrange(1 << 32))),
        )

    @property
    def min_faults(self) -> int:
        """What a run must have injected: CI's small runs at least three of each."""
        return 3 if self.name == "small" else 1

    @property
    def deadline_s(self) -> float:
        """The longest a run may take before the test gives up (a stuck processor)."""
        return 600.0 + self.commands / 50

    @property
    def test_timeout_s(self) -> float:
        """pytest-timeout's bound for a scenario (tests/conftest.py): the start, the
        load's deadline, then what may follow it at the longest: every instance's
        SIGTERM, the settle, the final reads (each topic, the live reader)."""
        after = TERM_TIMEOUT_S + settle_s(LONGEST_TRANSACTION_TIMEOUT_S)
        reads = 6 * READ_TIMEOUT_S  # the five topics and the live reader's catch-up
        return START_S + self.deadline_s + after + reads


def make_walkers(scale: Scale, rng: random.Random, commands: int | None = None) -> list[Walker]:
    """`commands` spread over `scale.workflows` walkers (budgets differ by at most one)."""
    total = scale.commands if commands is None else commands
    base, extra = divmod(total, scale.workflows)
    return [
        Walker(str(uuid.UUID(int=rng.getrandbits(128), version=4)), rng, base + (i < extra))
        for i in range(scale.workflows)
    ]


def kill_storm(points: tuple[float, ...]) -> Callable[[Supervisor], None]:
    """The crash storm's chaos: instances a and b, and at each point a random one
    SIGKILLed and started again."""

    def chaos(sup: Supervisor) -> None:
        sup.start("a")
        sup.start("b")
        sup.run_chaos(sup.kill_storm(points))

    return chaos


def settle_s(transaction_timeout_s: float) -> float:
    """How long a transaction left open (by an instance killed and never restarted,
    or a zombie) may stay open: its timeout, then the broker's next abort check."""
    return transaction_timeout_s + ABORT_CHECK_MS / 1000 + SETTLE_SLACK_S


def prepare(kafka: KafkaConfig) -> None:
    create_topics(kafka, partitions=PARTITIONS)


@dataclass
class Run:
    """One scenario's moving parts; `go` drives the load to the end under the chaos."""

    kafka: KafkaConfig
    scale: Scale
    log_dir: Path
    malformed: int = 0  # malformed records to interleave
    commands: int | None = None  # valid commands, if not the scale's
    # Shares of the load answered at which a client with a reply topic of its own
    # starts (`workload.ReplyClient`), the walkers shared among them; none: every
    # reply goes to the replies topic.
    client_starts: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        self.rng = random.Random(self.scale.seed)
        self.supervisor = Supervisor(
            self.kafka.bootstrap_servers,
            self.kafka.topic_prefix,
            self.log_dir,
            self.rng,
            progress=lambda: self.driver.progress,
        )
        factory = MalformedFactory(random.Random(self.scale.seed + 1), PARTITIONS)
        self.malformed_factory = factory if self.malformed else None
        walkers = make_walkers(self.scale, self.rng, self.commands)
        replies = Topics(self.kafka.topic_prefix).replies
        n = len(self.client_starts)
        clients = [
            ReplyClient(f"{replies}.client-{i}", CLIENT_PARTITIONS, at, walkers[i::n])
            for i, at in enumerate(self.client_starts)
        ]
        self.driver = Driver(
            self.kafka,
            walkers,
            PARTITIONS,
            malformed=self.malformed_factory,
            malformed_total=self.malformed,
            clients=clients,
            ceiling=self.supervisor.ceiling,
        )
        # Every scenario gets a reader during the chaos (live.py); off with
        # DUROOT_RELIABILITY_LIVE=0, to measure what it costs.
        self.live = LiveReader(self.kafka, PARTITIONS)
        self.live_on = os.environ.get("DUROOT_RELIABILITY_LIVE", "1") != "0"
        self.supervisor.cleanups.append(self.live.stop)  # also when the test fails
        self.started = time.monotonic()
        self.seconds = 0.0

    def go(self, chaos: Callable[[Supervisor], None] | None = None) -> None:
        """Drive the load; `chaos(supervisor)` starts whatever disturbs it."""
        if self.live_on:
            self.live.start()
        if chaos is not None:
            chaos(self.supervisor)
        try:
            self.driver.run(self.scale.deadline_s)
        except AssertionError as exc:
            topics = Topics(self.kafka.topic_prefix)
            names = [topics.events, topics.index, topics.replies]
            hanging = open_transactions(self.kafka, names)  # a stuck LSO hides replies
            raise AssertionError(
                f"{exc}\nopen transactions: {hanging}\n{self.supervisor.diagnostics()}"
            ) from None
        self.supervisor.stop_chaos()
        self.seconds = time.monotonic() - self.started
        self.supervisor.stop_all()

    def go_and_verify(self, chaos: Callable[[Supervisor], None]) -> Report:
        """`go`, then `settle_and_verify`; every process stopped whatever happens."""
        try:
            self.go(chaos)
            return self.settle_and_verify()
        finally:
            self.supervisor.close()

    def settle_and_verify(self) -> Report:
        """No transaction left open, every command consumed, the live reader's final
        check (what it read is what is there), then the replay."""
        topics = Topics(self.kafka.topic_prefix)
        names = [topics.commands, topics.events, topics.index, topics.replies, topics.dlq]
        wait_until(
            lambda: not open_transactions(self.kafka, names),
            timeout=settle_s(self.supervisor.transaction_timeout_s()),
            interval=1,
            what=f"no open transactions ({open_transactions(self.kafka, names)})",
        )
        behind = unconsumed_commands(self.kafka)
        assert not behind, f"the processors' committed offsets are not at the end: {behind}"
        events = read_topic(self.kafka, topics.events)
        self.live.finish(events)
        return replay(self.kafka, events, tuple(c.topic for c in self.driver.clients))

    def verdict(
        self,
        name: str,
        report: Report,
        capsys: pytest.CaptureFixture[str],
        allow_fatal_exits: bool = False,
    ) -> None:
        """Print and save the figures, then assert the guarantees. `allow_fatal_exits`:
        an instance may stop with exit code 1 (a fatal Kafka error) and be restarted."""
        sup, driver = self.supervisor, self.driver
        figures = {
            "scenario": name,
            "scale": self.scale.name,
            "seed": self.scale.seed,
            "seconds": round(self.seconds, 1),
            "commands": report.commands,
            "faults": len(sup.faults),
            "fault_log": [f"{f.what} at {f.progress:.0%} answered, {f.at} s" for f in sup.faults],
            "stalls": driver.stalls,
            "longest_quiet_s": round(driver.longest_quiet_s, 1),
            "kills": sup.kills,
            "joins": sup.joins,
            "leaves": sup.leaves,
            "unexpected_exits": len(sup.unexpected_exits),
            "exits": [
                f"{e.instance_id} {e.what} {e.returncode} at {e.at} s" for e in sup.unexpected_exits
            ],
            "sent": driver.sent,
            "clients": [f"{c.topic} from {c.starts_at:.0%}" for c in driver.clients],
            "misrouted": len(driver.misrouted),
            "malformed_kinds": self.malformed_factory.counts if self.malformed_factory else {},
            **{k: v for k, v in asdict(report).items() if k not in _NOT_FIGURES},
            "outcomes": dict(report.errors),
            "dlq_reasons": dict(report.reasons),
            **self.live.figures(),
        }
        RESULTS_DIR.mkdir(exist_ok=True)
        (RESULTS_DIR / f"reliability-{name}.json").write_text(json.dumps(figures, indent=2))
        with capsys.disabled():
            print(
                f"\n[reliability {name}] seed={self.scale.seed} {self.seconds:.0f} s "
                f"commands={report.commands} faults={len(sup.faults)} "
                f"events={report.events_found} lost={report.lost} "
                f"duplicated={report.duplicated} stalls={driver.stalls} "
                f"(longest quiet {driver.longest_quiet_s:.0f} s)\n"
                f"  faults: {figures['fault_log']}\n"
                f"  exits={[(e.instance_id, e.returncode, e.at) for e in sup.unexpected_exits]} "
                f"{report.summary()}\n"
                f"  live reader: {self.live.figures()}"
            )
        problems = "\n".join(report.problems)
        exits = [e for e in sup.unexpected_exits if not (allow_fatal_exits and e.returncode == 1)]
        assert not exits, f"processors exited unasked: {exits}"
        assert not driver.unexpected_replies, driver.unexpected_replies[:10]
        assert all(c.started for c in driver.clients), "a client never started"
        assert not driver.misrouted, (
            f"{len(driver.misrouted)} replies not on the route asked for: {driver.misrouted[:10]}"
        )
        assert report.commands == driver.sent, "the commands topic lost or gained records"
        assert report.lost == 0 and report.duplicated == 0, problems
        live = self.live.problems
        assert not live, f"the live reader saw {len(live)}+ violations:\n" + "\n".join(live)
        if self.live_on:
            assert self.live.checker.events > 0, "the live reader read nothing"
        assert report.problem_count == 0, f"{report.problem_count} problems:\n{problems}"
        planned = len(self.scale.fault_points)
        assert len(sup.faults) == planned, (
            f"{len(sup.faults)} of {planned} faults injected (faults wait for their share "
            "of the load and none comes after it: the load ended first)"
        )
        assert len(sup.faults) >= self.scale.min_faults, (
            f"{len(sup.faults)} faults, {self.scale.name} runs need {self.scale.min_faults}"
        )
