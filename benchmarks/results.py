"""What each benchmark measures: one frozen dataclass per result.

Each benchmark's `main` returns its result and writes it (`dataclasses.asdict`)
to `bench-results/<name>.json`; `benchmarks.targets` reads the figures it
judges from these types, so a renamed or missing figure is a type error, not
an empty cell in the table. Rates are per second, times in the unit their
name ends in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    """The machine's load averages (1, 5 and 15 minutes) at one moment."""

    one_minute: float
    five_minutes: float
    fifteen_minutes: float


# --- core: the pure core on one core ------------------------------------------------


@dataclass(frozen=True)
class CoreSteps:
    """The per-command core step by step: microseconds of each, timed alone."""

    us_decode_command: float
    us_decide_with_evolve: float
    us_encode_event: float
    us_event_key_and_headers: float
    us_reply_for: float
    us_encode_reply: float


@dataclass(frozen=True)
class CoreResult:
    decide_evolve_encode_per_s: float
    command_round_per_s: float
    decode_event_per_s: float
    encode_event_per_s: float
    decode_command_per_s: float
    steps: CoreSteps


# --- handler: the processor's Python per command, no Kafka ----------------------------


@dataclass(frozen=True)
class HandlerResult:
    """Microseconds of CPU per command (the keys `benchmarks.handler` reports)."""

    us_append_1_path: float
    us_append_10000_paths: float
    us_per_path: float


# --- txn_floor: one bare transaction ------------------------------------------------------


@dataclass(frozen=True)
class TxnFloorSetting:
    """Bare transactions with one retry backoff setting (pooled over the rounds)."""

    produce_p50_ms: float
    send_offsets_p50_ms: float
    commit_p50_ms: float
    total_p50_ms: float
    total_p90_ms: float
    concurrent_transactions_per_txn: float  # CONCURRENT_TRANSACTIONS answers, from the log


@dataclass(frozen=True)
class TxnFloorResult:
    tuned: TxnFloorSetting  # the processor's retry backoff
    default: TxnFloorSetting  # librdkafka's
    load_before: Load


# --- processor: throughput, latency, restore, memory -------------------------------------


@dataclass(frozen=True)
class Throughput:
    commands: int
    workflows: int
    passthrough_per_s: float
    processor_per_s: float
    ratio: float  # processor / pass-through: the median of the rounds'
    round_ratios: tuple[float, ...]  # processor / pass-through in each round
    processor_2_instances_per_s: float
    scale_out_ratio: float  # two instances / one
    # Microseconds of CPU per command between 10 % and 90 % drained, medians of the
    # rounds: of the draining process, and of the whole machine (the broker's too);
    # and the busy share of the machine's cores meanwhile.
    passthrough_cpu_us: float
    processor_cpu_us: float
    passthrough_machine_cpu_us: float
    processor_machine_cpu_us: float
    passthrough_machine_busy: float
    processor_machine_busy: float


@dataclass(frozen=True)
class Attribution:
    """Means per committed transaction between two scrapes of the processor's /metrics."""

    batch_commands: float
    batch_ms: float
    decide_ms: float
    produce_ms: float
    send_offsets_ms: float
    commit_ms: float
    transactions: float


@dataclass(frozen=True)
class LatencyRun:
    """One open-loop run at a fixed offered rate: command -> reply visible."""

    offered_per_s: float
    achieved_offered_per_s: float
    commands: int
    missing_replies: int
    bounded: bool  # late commands waited about as long as earlier ones
    visible_p50_ms: float
    visible_p99_ms: float
    visible_p999_ms: float
    queue_p50_ms: float  # sent -> reply produced
    queue_p99_ms: float
    commit_p50_ms: float  # reply produced -> visible
    commit_p99_ms: float
    drain_wait_s: float
    attribution: Attribution


@dataclass(frozen=True)
class LatencyPoint:
    """The best run (lowest p99) of each retry backoff setting at one offered rate."""

    tuned: LatencyRun
    default: LatencyRun


@dataclass(frozen=True)
class Capacity:
    knee_per_s: float  # the highest offered rate whose lag stayed bounded
    steps: tuple[LatencyRun, ...]
    load_before: Load
    load_after: Load


@dataclass(frozen=True)
class LatencyResult:
    capacity: Capacity
    at_10pct: LatencyPoint
    at_25pct: LatencyPoint
    at_50pct: LatencyPoint
    at_75pct: LatencyPoint
    at_200: LatencyPoint  # 200 commands/s


@dataclass(frozen=True)
class RestoreRates:
    restore_per_s: float
    raw_consume_per_s: float
    untuned_per_s: float  # restore with librdkafka's fetch queue backoff
    ratio: float  # restore / raw consume


@dataclass(frozen=True)
class Restore:
    events: int
    workflows: int
    one_partition: RestoreRates
    six_partitions: RestoreRates


@dataclass(frozen=True)
class Memory:
    workflows: int
    events: int
    rss_empty_mib: float
    rss_mib: float
    bytes_per_workflow: float  # RSS, as the restore leaves it
    live_bytes_per_workflow: float  # held by the state objects themselves
    standby_bytes_per_workflow: float  # a warm standby's objects per workflow of another
    restore_events_per_s: float


@dataclass(frozen=True)
class ProcessorResult:
    """The sections run (`python -m benchmarks.processor latency` runs one)."""

    throughput: Throughput | None
    latency: LatencyResult | None
    restore: Restore | None
    memory: Memory | None


# --- get, runner, history -----------------------------------------------------------------


@dataclass(frozen=True)
class GetResult:
    events_per_partition: int
    lines: int
    get_sequential_s: float
    get_interleaved_s: float
    full_partition_scan_s: float
    populate_events_per_s: float


@dataclass(frozen=True)
class RunnerResult:
    directories: int
    lines: int
    seconds: float
    lines_per_s: float  # processor and runner each a process of their own
    lines_per_s_one_process: float  # both threads of one process, as `run` has them
    du_alone_lines_per_s: float
    to_du_alone: float  # lines_per_s / du_alone_lines_per_s
    batch_size: int
    batch_bytes: int


@dataclass(frozen=True)
class HistoryResult:
    events: int
    workflows: int
    restore_s: float
    restore_events_per_s: float
    raw_consume_s: float
    raw_consume_events_per_s: float
    restore_ratio: float  # raw consume time / restore time
    state_restore_s: float  # the same partition restored from its state records
    standby_restore_s: float  # from a standby's read of them and a tail of changed states
    load_before: Load


# --- baseline: this tree against an earlier one -----------------------------------------


@dataclass(frozen=True)
class Comparison:
    figure: str
    before: float  # the earlier tree's
    after: float  # this tree's

    @property
    def ratio(self) -> float | None:
        return self.after / self.before if self.before else None


@dataclass(frozen=True)
class BaselineResult:
    rev: str
    passthrough_per_s: float
    comparisons: tuple[Comparison, ...]
    load_before: Load


# --- failover: a processor crashes, stops, restarts or joins under load -------------------


@dataclass(frozen=True)
class FailoverPartition:
    """One commands partition around the event (times from the event, seconds)."""

    partition: int
    owner_before: str
    owner_after: str
    moved: bool  # the victim's, or owned by another instance after the event
    waited_s: float  # the longest wait of a command, counted from the event at the earliest
    # The same, to when the processor produced the reply instead of to when it became
    # visible: less than waited_s when an open transaction on the reply partition (a
    # dead owner's) held committed replies back from the read_committed reader.
    produced_waited_s: float
    silent_s: float  # the longest time without a reply becoming visible
    back_after_s: float  # event -> the end of that silence: answering again
    p99_before_ms: float  # sent -> visible before the event
    commands: int  # outstanding at the event or sent after it
    missing: int  # of those, never answered


@dataclass(frozen=True)
class Takeover:
    """An assignment after the event, from the instance's log ("partitions restored")."""

    instance: str
    partitions: tuple[int, ...]
    assigned_after_s: float  # event -> the restore began (detection and rebalance)
    restore_s: float  # the restore, waits for open transactions included
    events: int  # restored
    waited_for_transaction: bool  # "restore waiting for an open transaction" logged


@dataclass(frozen=True)
class FailoverRun:
    scenario: str  # crash, stop, restart, join, steady
    run: int
    victim: str  # the instance killed, stopped or started ("" for steady)
    moved_waited_s: float | None  # the longest waited_s of a moved partition (None: none moved)
    own_waited_s: float | None  # the same of the partitions that stayed with their owner
    moved_produced_s: float | None  # the longest produced_waited_s of a moved partition
    own_produced_s: float | None  # the same of the others
    settled: bool  # every partition answered normally again within the observation
    observed_s: float  # event -> end of the observation
    sent_per_s: float  # the load client's achieved rate
    rebalances_before: int  # assignments and revocations logged before the event
    rebalances_after: int  # the same from the event on
    eviction_lines: int  # librdkafka lines of session timeouts, unknown members, fencing
    eviction_samples: tuple[str, ...]
    partitions: tuple[FailoverPartition, ...]
    takeovers: tuple[Takeover, ...]


@dataclass(frozen=True)
class FailoverResult:
    events: int  # the history on the events topic before the first run
    workflows: int
    rate_per_s: float
    group_protocol: str  # classic or consumer (KIP-848)
    processor_settings: tuple[str, ...]  # -X key=value given to every processor
    broker_settings: tuple[str, ...]  # server properties on top of the local broker's
    standbys: int  # --standbys of every processor
    runs: tuple[FailoverRun, ...]
    load_before: Load
