"""`duroot-stream dlq list|show|replay` against a real broker and processor."""

from __future__ import annotations

import json

import pytest

from duroot_stream.cli import main as cli
from duroot_stream.client.deadletters import DeadLetter, DeadLetters
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import Init
from duroot_stream.wire import partition_for
from tests.kafka_helpers import wait_until
from tests.processor_harness import (
    PARTITIONS,
    Requester,
    command,
    new_workflow_id,
    running_processor,
    setup_topics,
    workflow_events,
)

pytestmark = pytest.mark.broker

INIT = Init("0b0c8d4e-1111-4222-8333-444455556666", "/dlq", "fs-dlq", "/srv/dlq")


def args(kafka: KafkaConfig) -> list[str]:
    return ["-b", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix]


def letters(kafka: KafkaConfig, count: int) -> list[DeadLetter]:
    """The dead letters, once there are `count` of them."""
    found: list[DeadLetter] = []

    def enough() -> bool:
        found[:] = DeadLetters(kafka).read()
        return len(found) >= count

    wait_until(enough, timeout=60, what=f"{count} dead letters")
    return found


def test_list_show_and_replay_a_dead_letter_once_its_cause_is_fixed(
    kafka: KafkaConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_topics(kafka)
    workflow = new_workflow_id()
    with running_processor(kafka):
        requester = Requester(kafka)
        try:
            right = partition_for(workflow, PARTITIONS)
            # A producer with the wrong partitioner: the command lands elsewhere.
            requester.send(command(workflow, INIT), partition=(right + 1) % PARTITIONS)
            requester.send(raw=b"\x00not avro at all", key=b"garbage")
            first = letters(kafka, 2)
            assert sorted(letter.reason for letter in first) == ["misrouted", "undecodable"]
            assert workflow_events(kafka, workflow) == []

            capsys.readouterr()
            assert cli.main(["dlq", "list", "--json", *args(kafka)]) == 0
            listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            assert {row["reason"] for row in listed} == {"misrouted", "undecodable"}
            misrouted = next(row for row in listed if row["reason"] == "misrouted")
            assert misrouted["key"] == workflow and misrouted["replays"] == 0

            assert cli.main(["dlq", "show", str(misrouted["offset"]), *args(kafka)]) == 0
            shown = capsys.readouterr().out
            assert "reason: misrouted" in shown and "command: Command(" in shown

            # A dry run sends nothing.
            replay = ["dlq", "replay", "--reason", "misrouted", *args(kafka)]
            assert cli.main([*replay, "--dry-run"]) == 0
            assert "would replay 1, skipped 0" in capsys.readouterr().err
            # Replayed with murmur2 partitioning, it is applied; replayed again, the
            # processor knows the command id and applies nothing more.
            for _ in range(2):
                assert cli.main(replay) == 0
                assert "replayed 1, skipped 0" in capsys.readouterr().err
                wait_until(
                    lambda: len(workflow_events(kafka, workflow)) == 1,
                    timeout=60,
                    what="the replayed Init applied",
                )
            started = workflow_events(kafka, workflow)
            assert [h.event_type for h, _ in started] == ["STARTED"]

            # What cannot be fixed by a replay comes back, counted, until the guard stops it.
            undecodable = ["dlq", "replay", "--reason", "undecodable", *args(kafka)]
            newest = next(letter for letter in first if letter.reason == "undecodable")
            for replays in (1, 2, 3):
                assert cli.main([*undecodable, "--from", str(newest.offset)]) == 0
                assert "replayed 1, skipped 0" in capsys.readouterr().err
                newest = max(letters(kafka, 2 + replays), key=lambda letter: letter.offset)
                assert newest.reason == "undecodable" and newest.replays == replays
                assert newest.value == b"\x00not avro at all" and newest.key == b"garbage"
            assert cli.main([*undecodable, "--from", str(newest.offset)]) == 0
            out, err = capsys.readouterr()
            assert "replayed 3 times already" in out and "replayed 0, skipped 1" in err
        finally:
            requester.close()


def test_an_empty_dead_letter_topic_lists_nothing(
    kafka: KafkaConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_topics(kafka)
    assert cli.main(["dlq", "list", *args(kafka)]) == 0
    assert capsys.readouterr().out == ""
    assert cli.main(["dlq", "show", "0", *args(kafka)]) == 1
    assert "no dead letter" in capsys.readouterr().err
