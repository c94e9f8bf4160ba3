"""Benchmark of the processor's pure core on one core: no Kafka, no I/O.

Figures (per second, best of several rounds, garbage collection paused while
timing, like `timeit`):

- `decide_evolve_encode_per_s`: an `Append` with one path against an
  APPENDING workflow: `decide` (which evolves the state) and `encode_event`
  of its one event; the ids come from the processor's `MonotonicUlids`.
  Events and replies are encoded as the processor encodes them, without
  checking again the ids that decoding the command checked
  (`validate=False`).
- `command_round_per_s`: the whole per-command core of the processor:
  `decode_command`, `decide`, `encode_event` + `event_headers`, `reply_for`
  and `encode_reply`.
- `decode_event_per_s`, `encode_event_per_s`, `decode_command_per_s`: the
  codec alone (encode_event with the id checks).
- `us_*`: the command round step by step, microseconds per command (each
  step timed alone, so they add up to a little less than the round).

Run: `python -m benchmarks.core [--quick]`; writes bench-results/core.json.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict

from benchmarks.results import CoreResult, CoreSteps
from benchmarks.workload import REGISTRY_ID, write_report
from duroot_stream.domain import (
    NO_VC,
    Accepted,
    Append,
    Command,
    Init,
    PathUsage,
    WorkflowEvent,
    WorkflowState,
    decide,
    initial_state,
    reply_for,
)
from duroot_stream.ids import MonotonicUlids, new_ulid
from duroot_stream.wire import Codec, event_headers

WORKFLOW_ID = "7f1c0a3e-5b1d-4c2a-9e3f-0123456789ab"
T0 = 1_700_000_000_000


def _best_rate(work: Callable[[], int], rounds: int) -> float:
    """Items per second of `work` (which returns how many it did), best round."""
    best = 0.0
    for _ in range(rounds):
        enabled = gc.isenabled()
        gc.disable()
        try:
            start = time.perf_counter()
            count = work()
            elapsed = time.perf_counter() - start
        finally:
            if enabled:
                gc.enable()
        best = max(best, count / elapsed)
    return best


def _appending_workflow() -> tuple[WorkflowState, MonotonicUlids]:
    """A workflow after Init and a first Append: the state a du run is in."""
    new_id = MonotonicUlids()
    state = initial_state(WORKFLOW_ID)
    for body in (
        Init(REGISTRY_ID, "/example/data", "files.example.org", "/srv/data"),
        Append((PathUsage(".", 4096),)),
    ):
        decision = decide(state, Command(new_ulid(), WORKFLOW_ID, NO_VC, T0, body), new_id)
        assert isinstance(decision, Accepted)
        state = decision.state
    return state, new_id


def _appends(n: int) -> list[Command]:
    """`n` Appends of one path each, distinct command ids (made before timing)."""
    return [
        Command(
            new_ulid(), WORKFLOW_ID, NO_VC, T0, Append((PathUsage(f"dir/{i % 1000}", i * 4096),))
        )
        for i in range(n)
    ]


def run(quick: bool = False) -> CoreResult:
    n = 2_000 if quick else 50_000
    rounds = 3 if quick else 7
    codec = Codec()
    commands = _appends(n)

    def decide_evolve_encode() -> int:
        state, new_id = _appending_workflow()
        encode = codec.encode_event
        for command in commands:
            decision = decide(state, command, new_id)
            assert isinstance(decision, Accepted)
            for event in decision.events:
                encode(event, validate=False)
            state = decision.state
        return len(commands)

    encoded_commands = [codec.encode_command(c) for c in commands]

    def command_round() -> int:
        state, new_id = _appending_workflow()
        for data in encoded_commands:
            command = codec.decode_command(data)
            decision = decide(state, command, new_id)
            assert isinstance(decision, Accepted)
            for event in decision.events:
                codec.encode_event(event, validate=False)
                event_headers(event)
            codec.encode_reply(reply_for(command, decision), validate=False)
            state = decision.state
        return len(encoded_commands)

    events: list[WorkflowEvent] = []
    state, new_id = _appending_workflow()
    for command in commands:
        decision = decide(state, command, new_id)
        assert isinstance(decision, Accepted)
        events.extend(decision.events)
        state = decision.state
    encoded_events = [codec.encode_event(e) for e in events]

    def decode_events() -> int:
        decode = codec.decode_event
        for data in encoded_events:
            decode(data)
        return len(encoded_events)

    def encode_events() -> int:
        encode = codec.encode_event
        for event in events:
            encode(event)
        return len(events)

    def decode_commands() -> int:
        decode = codec.decode_command
        for data in encoded_commands:
            decode(data)
        return len(encoded_commands)

    result = CoreResult(
        decide_evolve_encode_per_s=_best_rate(decide_evolve_encode, rounds),
        command_round_per_s=_best_rate(command_round, rounds),
        decode_event_per_s=_best_rate(decode_events, rounds),
        encode_event_per_s=_best_rate(encode_events, rounds),
        decode_command_per_s=_best_rate(decode_commands, rounds),
        steps=_steps(codec, commands, encoded_commands, rounds),
    )
    _print_table(result)
    return result


def _steps(codec: Codec, commands: list[Command], encoded: list[bytes], rounds: int) -> CoreSteps:
    """The command round step by step: microseconds per command, best round."""
    state, new_id = _appending_workflow()
    decisions: list[Accepted] = []
    for command in commands:  # a chain of states, as the round makes them
        decision = decide(state, command, new_id)
        assert isinstance(decision, Accepted)
        decisions.append(decision)
        state = decision.state
    befores = [_appending_workflow()[0], *(d.state for d in decisions[:-1])]
    events = [d.events[0] for d in decisions]
    replies = [reply_for(c, d) for c, d in zip(commands, decisions, strict=True)]
    n = len(commands)

    def each(step: Callable[[], object]) -> Callable[[], int]:
        def work() -> int:
            step()
            return n

        return work

    def deciding() -> None:
        for before, command in zip(befores, commands, strict=True):
            decide(before, command, new_id)

    def us(step: Callable[[], object]) -> float:
        return round(1e6 / _best_rate(each(step), rounds), 2)

    return CoreSteps(
        us_decode_command=us(lambda: [codec.decode_command(d) for d in encoded]),
        us_decide_with_evolve=us(deciding),
        us_encode_event=us(lambda: [codec.encode_event(e, validate=False) for e in events]),
        us_event_key_and_headers=us(lambda: [(e.key.encode(), event_headers(e)) for e in events]),
        us_reply_for=us(
            lambda: [reply_for(c, d) for c, d in zip(commands, decisions, strict=True)]
        ),
        us_encode_reply=us(lambda: [codec.encode_reply(r, validate=False) for r in replies]),
    )


def _print_table(result: CoreResult) -> None:
    rates = {k: v for k, v in asdict(result).items() if isinstance(v, float)}
    width = max(len(k) for k in rates)
    print(f"{'core benchmark (one core)':<{width}}  {'per second':>12}  {'us each':>8}")
    for name, rate in rates.items():
        print(f"{name:<{width}}  {rate:>12,.0f}  {1e6 / rate:>8.2f}")
    for name, us in asdict(result.steps).items():
        print(f"  {name:<28} {us:6.2f} us")


def main(argv: Sequence[str] = ()) -> CoreResult:
    quick = "--quick" in argv
    result = run(quick=quick)
    print(f"wrote {write_report('core', quick, result)}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
