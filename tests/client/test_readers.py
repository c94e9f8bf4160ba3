"""DuRootReader against the real broker and processor: get (and --wait), status,
the index table and the event stream."""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from duroot_stream.client import (
    DuResult,
    DuRootClient,
    DuRootReader,
    Progress,
    StoredEvent,
    WaitTimeout,
    WorkflowNotFound,
    make_command,
)
from duroot_stream.client.history import History
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import Append, PathUsage, StateCode, evolve, initial_state
from duroot_stream.wire import Codec, Topics, partition_for
from tests.kafka_helpers import read_all, wait_until
from tests.processor_harness import PARTITIONS, running_processor, setup_topics

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def pipeline(bootstrap: str) -> Iterator[KafkaConfig]:
    kafka = KafkaConfig(bootstrap_servers=bootstrap, topic_prefix=f"r{uuid.uuid4().hex[:10]}.")
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


REG = str(uuid.uuid4())


def test_get_wait_returns_once_the_workflow_completes(
    client: DuRootClient, reader: DuRootReader
) -> None:
    wf = client.begin(REG, "/w", "h", "/srv/w").workflow_id
    client.append(wf, [("a", 1)])
    seen: list[Progress] = []
    results: list[DuResult | BaseException] = []

    def get() -> None:
        try:
            results.append(reader.get_du(wf, wait=True, timeout=60, progress=seen.append))
        except BaseException as exc:
            results.append(exc)

    thread = threading.Thread(target=get)
    thread.start()
    wait_until(lambda: seen, timeout=30, what="get_du(wait=True) to report progress")
    assert seen[0].lines == 1 and seen[0].state is StateCode.APPENDING and not results
    client.append(wf, [("b", 2)])
    client.commit(wf)
    thread.join(30)
    assert not thread.is_alive()
    (result,) = results
    assert isinstance(result, DuResult)
    assert result.complete and result.lines == [PathUsage("a", 1), PathUsage("b", 2)]


def test_get_wait_times_out(client: DuRootClient, reader: DuRootReader) -> None:
    wf = client.begin(REG, "/t", "h", "/srv/t").workflow_id
    start = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"did not complete in time \(state INITIALIZED"):
        reader.get_du(wf, wait=True, timeout=1)
    assert time.monotonic() - start < 10
    result = reader.get_du(wf)  # without wait: what is there, not complete
    assert (result.complete, result.lines, result.state) == (False, [], StateCode.INITIALIZED)


def test_get_of_an_unknown_workflow(reader: DuRootReader) -> None:
    with pytest.raises(WorkflowNotFound):
        reader.get_du(str(uuid.uuid4()))
    with pytest.raises(WorkflowNotFound):
        reader.status(str(uuid.uuid4()))


def _same_partition_ids(n: int) -> list[str]:
    wanted: int | None = None
    ids: list[str] = []
    while len(ids) < n:
        wf = str(uuid.uuid4())
        p = partition_for(wf, PARTITIONS)
        if wanted is None or p == wanted:
            wanted = p
            ids.append(wf)
    return ids


def test_get_finds_interleaved_histories_in_one_partition(
    client: DuRootClient,
    reader: DuRootReader,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = _same_partition_ids(2)
    for wf in (first, second):
        client.init(wf, REG, f"/i/{wf}", "h", "/srv")
    lines: dict[str, list[PathUsage]] = {first: [], second: []}
    futures = []
    for round_ in range(6):
        for wf in (first, second):
            batch = tuple(PathUsage(f"{wf[:4]}/{round_}/{i}", i) for i in range(700))
            futures.append(client.submit(make_command(wf, Append(batch))))
            lines[wf] += batch
    assert all(f.result(timeout=60).ok for f in futures)
    client.commit(first)
    extra = [PathUsage("late", 1)]
    client.append(second, extra)
    client.commit(second)
    expected = {first: lines[first], second: lines[second] + extra}
    with caplog.at_level(logging.DEBUG, logger="duroot_stream.client.readers"):
        for wf in (first, second):  # anchored at STARTED (still in the index topic)
            assert reader.get_du(wf).lines == expected[wf]
        assert "starts earlier" not in caplog.text

        # After compaction only COMPLETED is left in the index: get must look back.
        index = reader.index(registry_id=REG)
        monkeypatch.setattr(DuRootReader, "_index_anchor", lambda _s, _c, wf: index[wf].latest)
        for wf in (first, second):
            assert reader.get_du(wf).lines == expected[wf]
        assert "starts earlier" in caplog.text
    assert reader.status(second).events == 1 + 4201 + 2


def test_status_of_a_running_workflow(client: DuRootClient, reader: DuRootReader) -> None:
    begun = client.begin(REG, "/s", "h", "/srv/s")
    vid = client.append(begun.workflow_id, [("x", 10), ("y", 20)])
    status = reader.status(begun.workflow_id)
    assert (status.state, status.vid, status.events, status.lines) == (
        StateCode.APPENDING,
        vid,
        3,
        2,
    )
    assert status.completed_at_ms is None and status.status_code is None
    assert status.partition == partition_for(begun.workflow_id, PARTITIONS)


def test_index_table_tracks_states_and_forgets_deleted_workflows(
    client: DuRootClient, reader: DuRootReader
) -> None:
    reg = str(uuid.uuid4())
    active = client.begin(reg, "/a", "ha", "/srv/a").workflow_id
    done = client.begin(reg, "/d", "hd", "/srv/d").workflow_id
    client.commit(done)
    index = reader.index(registry_id=reg)
    assert list(index) == [active, done]
    assert (index[active].state, index[active].host, index[active].status_code) == (
        "active",
        "ha",
        None,
    )
    assert (index[done].state, index[done].global_root, index[done].status_code) == (
        "completed",
        "/d",
        0,
    )
    assert index[done].started_at_ms and index[done].completed_at_ms
    client.delete(done)
    assert list(reader.index(registry_id=reg)) == [active]


def test_events_from_now_following(client: DuRootClient, reader: DuRootReader) -> None:
    stop, positioned = threading.Event(), threading.Event()
    got: list[StoredEvent] = []

    def follow() -> None:
        events = reader.events(from_beginning=False, follow=True, stop=stop, positioned=positioned)
        got.extend(events)

    old = client.begin(REG, "/old", "h", "/srv").workflow_id
    thread = threading.Thread(target=follow)
    thread.start()
    assert positioned.wait(30)
    wf = client.begin(REG, "/f", "h", "/srv/f").workflow_id
    client.commit(wf)
    wait_until(
        lambda: [s.seq for s in got if s.workflow_id == wf] == [0, 1, 2],
        timeout=30,
        what="the follower to see STARTED, COMPLETED, COMMITTED",
    )
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert old not in {s.workflow_id for s in got}

    client.delete(wf)
    mine = list(reader.events(workflow_id=wf))
    assert [(s.seq, s.event is None) for s in mine] == [
        (0, False),
        (1, False),
        (2, False),
        (0, True),
        (1, True),
        (2, True),
    ]


def test_the_history_folds_every_event_as_the_processor_does(
    pipeline: KafkaConfig, client: DuRootClient
) -> None:
    wf = client.begin(REG, "/fold", "h", "/srv/fold").workflow_id
    client.append(wf, [("a", 1), ("b", 2)])  # one command, two UPDATED events
    client.append(wf, [("c", 3)])  # another command
    client.commit(wf)
    prefix = f"{wf}/".encode()
    records = [
        m
        for m in read_all(pipeline.bootstrap_servers, Topics(pipeline.topic_prefix).events)
        if (m.key() or b"").startswith(prefix)
    ]
    codec = Codec()
    events = [codec.decode_event(m.value() or b"") for m in records]
    assert len(events) == 6  # STARTED, 3 UPDATED, COMPLETED, COMMITTED

    history = History(wf, codec)
    for record in records[:2]:
        history.add(record)
    early = history.result()
    for record in records[2:]:
        history.add(record)

    # The same state as the processor's fold, the recent command ids included.
    assert history.state == functools.reduce(evolve, events, initial_state(wf))
    assert early.lines == [PathUsage("a", 1)]  # a result is not changed by later records
    assert history.result().lines == [PathUsage("a", 1), PathUsage("b", 2), PathUsage("c", 3)]
