"""DuRootClient against the real broker and processor: every command, every
rejection the processor gives, timeouts, retries and pipelining."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from itertools import pairwise

import pytest
from confluent_kafka import Message

from duroot_stream.client import (
    DEFAULT_TIMEOUT_S,
    CommandTimeout,
    ConflictInit,
    ConflictState,
    ConflictStateAdvanced,
    DuRootClient,
    DuRootReader,
    InvalidArgument,
    Unavailable,
    VersionConflict,
    WorkflowFailed,
    WorkflowNotFound,
    make_command,
)
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    EVENT_EPOCH,
    DuRootStarted,
    DuUpdated,
    Init,
    PathUsage,
    StateCode,
)
from duroot_stream.kafka import header
from duroot_stream.wire import CORRELATION_ID, Codec, Topics
from tests.kafka_helpers import read_all
from tests.processor_harness import running_processor, setup_topics

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def pipeline(bootstrap: str) -> Iterator[KafkaConfig]:
    """Topics of their own and one processor for the whole module."""
    kafka = KafkaConfig(bootstrap_servers=bootstrap, topic_prefix=f"c{uuid.uuid4().hex[:10]}.")
    setup_topics(kafka)
    with running_processor(kafka):
        yield kafka


@pytest.fixture(scope="module")
def client(pipeline: KafkaConfig) -> Iterator[DuRootClient]:
    with DuRootClient(pipeline, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def reader(pipeline: KafkaConfig) -> DuRootReader:
    return DuRootReader(pipeline)


def _registry() -> str:
    return str(uuid.uuid4())


def test_every_command_returns_the_new_vid(client: DuRootClient, reader: DuRootReader) -> None:
    reg = _registry()
    begun = client.begin(reg, "/g", "h", "/srv")
    wf = begun.workflow_id
    assert client.init(wf, reg, "/g", "h", "/srv") == begun.vid  # same fields: a no-op
    v1 = client.append(wf, [("a", 1)], expected_vid=begun.vid)
    v2 = client.append_many(wf, [("b", 2), ("c", 3)], batch_size=1, expected_vid=v1)
    v3 = client.commit(wf, expected_vid=v2)
    assert begun.vid < v1 < v2 < v3  # ULIDs: later events sort later
    assert client.end(wf) == v3  # already ended by the processor: a no-op

    result = reader.get_du(wf)
    assert result.lines == [PathUsage("a", 1), PathUsage("b", 2), PathUsage("c", 3)]
    assert (result.complete, result.status_code, result.vid) == (True, 0, v3)
    status = reader.status(wf)
    assert (status.state, status.events, status.lines) == (StateCode.TERMINATED, 6, 3)
    assert (status.global_root, status.host, status.host_root) == ("/g", "h", "/srv")
    assert status.started_at_ms and status.completed_at_ms
    assert status.started_at_ms <= status.completed_at_ms

    assert client.delete(wf) == EVENT_EPOCH
    with pytest.raises(WorkflowNotFound):
        reader.get_du(wf)
    assert wf not in reader.index(registry_id=reg)


def test_fail_and_abort_expired_complete_with_their_status(
    client: DuRootClient, reader: DuRootReader
) -> None:
    reg = _registry()
    failed = client.begin(reg, "/g1", "h", "/srv/1").workflow_id
    client.fail(failed, 3, "du failed: boom")
    expired = client.begin(reg, "/g2", "h", "/srv/2").workflow_id
    client.append(expired, [(".", 4096)])
    client.abort_expired(expired)

    result = reader.get_du(failed)
    assert result.failed and (result.status_code, result.status_message) == (3, "du failed: boom")
    with pytest.raises(WorkflowFailed, match="du failed: boom"):
        result.raise_for_status()
    result = reader.get_du(expired)
    assert (result.status_code, result.status_message) == (104, "expired")
    assert result.lines == [PathUsage(".", 4096)]

    index = reader.index(registry_id=reg)
    assert [e.workflow_id for e in index.values()] == [failed, expired]  # oldest first
    assert {e.state for e in index.values()} == {"completed"}
    assert (index[failed].status_code, index[failed].global_root) == (3, "/g1")


def test_rejections_raise_typed_exceptions(client: DuRootClient) -> None:
    reg = _registry()
    begun = client.begin(reg, "/g", "h", "/srv")
    wf = begun.workflow_id
    with pytest.raises(ConflictInit, match="different host"):
        client.init(wf, reg, "/g", "other", "/srv")
    with pytest.raises(VersionConflict) as info:
        client.commit(wf, expected_vid=EVENT_EPOCH)
    assert (info.value.stored_vid, info.value.expected_vid) == (begun.vid, EVENT_EPOCH)
    with pytest.raises(InvalidArgument, match="code"):
        client.fail(wf, 0, "a failure needs a non-zero code")
    with pytest.raises(ValueError, match="no paths"):  # checked before sending
        client.append(wf, [])
    client.commit(wf)
    with pytest.raises(ConflictState, match="TERMINATED"):
        client.append(wf, [("late", 1)])
    with pytest.raises(ConflictStateAdvanced):
        client.init(wf, reg, "/g", "h", "/srv")
    with pytest.raises(ConflictState, match="UNINITIALIZED"):
        client.commit(str(uuid.uuid4()))


def test_submit_pipelines_commands(client: DuRootClient) -> None:
    reg = _registry()
    commands = [
        make_command(str(uuid.uuid4()), Init(reg, f"/g{i}", "h", f"/srv/{i}")) for i in range(20)
    ]
    futures = [client.submit(c) for c in commands]
    replies = [f.result(timeout=30) for f in futures]
    assert all(r.ok for r in replies)
    assert [r.command_id for r in replies] == [c.command_id for c in commands]


def test_append_many_10000_paths_in_order_with_a_vid_chain(
    client: DuRootClient, reader: DuRootReader
) -> None:
    begun = client.begin(_registry(), "/big", "h", "/srv/big")
    wf = begun.workflow_id
    paths = [PathUsage(f"dir{i % 97}/file {i}\nü", i * 512) for i in range(10_000)]
    start = time.monotonic()
    vid = client.append_many(wf, paths, batch_size=250, expected_vid=begun.vid)
    elapsed = time.monotonic() - start

    events = [s.event for s in reader.events(workflow_id=wf)]
    assert all(e is not None for e in events)
    assert [e.seq for e in events if e] == list(range(10_001))
    assert [e.parent for e in events[:1] if e] == [EVENT_EPOCH]
    for before, after in pairwise(events):
        assert after and before and after.parent == before.event_id
    assert events[-1] and events[-1].event_id == vid
    updated = [e.payload for e in events[1:] if e and isinstance(e.payload, DuUpdated)]
    assert [PathUsage(p.path, p.usage) for p in updated] == paths
    result = reader.get_du(wf)
    assert result.lines == paths and not result.complete and result.vid == vid
    print(f"append_many: 10,000 paths in {elapsed:.2f} s")


def test_timeout_when_no_processor_runs(kafka: KafkaConfig) -> None:
    setup_topics(kafka)
    with DuRootClient(kafka, timeout=2, retries=1) as client:
        client.start()  # connected: what follows is the command's own wait
        start = time.monotonic()
        with pytest.raises(CommandTimeout, match=r"within 2 s.*duroot-stream processor") as info:
            client.begin(_registry(), "/g", "h", "/srv")
        assert time.monotonic() - start >= client.timeout, "gave up before its timeout"
    # Sent, then re-sent once with the same command id: the reply thread gave up at
    # the deadline (its watchdog, 10 s later, would report no attempts).
    assert info.value.attempts == 2
    command_id = info.value.command.command_id
    sent = read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).commands)
    assert [header(m, CORRELATION_ID) for m in sent] == [command_id, command_id]


def test_missing_topics_are_reported(kafka: KafkaConfig) -> None:
    with (
        DuRootClient(kafka, timeout=2) as client,
        pytest.raises(Unavailable, match="topics create"),
    ):
        client.commit(str(uuid.uuid4()))


def test_retry_after_a_lost_reply_yields_one_set_of_events(pipeline: KafkaConfig) -> None:
    lost: list[Message] = []
    # A re-send every 3 s, for as long as a command may take (the client's default).
    with DuRootClient(pipeline, timeout=DEFAULT_TIMEOUT_S, retries=9) as client:
        exchange = client._exchange
        deliver = exchange.on_reply

        def lose_the_first_reply(msg: Message) -> None:
            if not lost and msg.error() is None and header(msg, CORRELATION_ID):
                lost.append(msg)
                return
            deliver(msg)

        exchange.on_reply = lose_the_first_reply  # type: ignore[method-assign]
        begun = client.begin(_registry(), "/g", "h", "/srv")

    assert len(lost) == 1
    codec = Codec()
    command_id = header(lost[0], CORRELATION_ID)
    topics = Topics(pipeline.topic_prefix)
    replies = [
        codec.decode_reply(m.value() or b"")
        for m in read_all(pipeline.bootstrap_servers, topics.replies)
        if header(m, CORRELATION_ID) == command_id
    ]
    # Every re-send got the first reply (a loaded machine may need more than one).
    assert len(replies) >= 2 and all(r == replies[0] for r in replies), replies
    assert replies[0].vid == begun.vid
    events = [
        codec.decode_event(m.value())
        for m in read_all(pipeline.bootstrap_servers, topics.events)
        if m.value() is not None and (m.key() or b"").startswith(begun.workflow_id.encode())
    ]
    assert [type(e.payload) for e in events] == [DuRootStarted]
