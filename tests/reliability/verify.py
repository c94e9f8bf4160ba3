"""Check what the processors wrote against the contract, with a model of its own.

The commands topic, read back in partition (offset) order, is what the
processors consumed. `replay` judges each record as docs/contract.md does
(`contract_wire`: fastavro's generic reader on the `.avsc` files, its own
murmur2, the contract's size limit) and feeds every command, per workflow in
that order, through a reference model of the state table (`contract_model`),
walking the events and index topics (read_committed) alongside:

- every event the model expects must be the next record of that workflow in the
  events topic: same key, seq, command id and payload, its parent the vid of the
  event before (the chain), headers agreeing with the body;
- likewise every index record (payload, registry, the vid it mirrors) and tombstone;
- nothing may be left over (a duplicate), nothing missing (a loss);
- every command record has exactly one reply (by correlation id) with the outcome
  the model expects; a re-sent command id answered from the dedupe memory gets the
  reply of its first application, byte for byte;
- every record the contract dead-letters has exactly one dead letter, with the
  `dlq-reason` the contract gives it, and a MALFORMED reply.

Nothing of `duroot_stream`'s codec, partitioner or domain is used: a mistake the
processor and the verifier shared would pass. The model makes no ids: a
workflow's vid is the id of the last event found for it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from duroot_stream.config import KafkaConfig
from duroot_stream.wire import Topics
from tests.reliability.contract_model import Outcome, Workflow
from tests.reliability.contract_wire import (
    EVENT_TYPES,
    Undecodable,
    canonical_ids,
    decoder,
    judge,
    partition_of,
)
from tests.reliability.topic_reads import Record, read_topic
from tests.reliability.verdicts import Report


@dataclass
class _Stream:
    """One workflow's records in a topic, and how far the replay has matched them."""

    records: list[Record] = field(default_factory=list)
    at: int = 0

    def next(self) -> Record | None:
        if self.at >= len(self.records):
            return None
        self.at += 1
        return self.records[self.at - 1]


def replay(
    kafka: KafkaConfig,
    events: dict[int, list[Record]] | None = None,
    reply_topics: tuple[str, ...] = (),
) -> Report:
    """Read the five topics and check them against the contract (module docstring).
    `events`: the events topic if already read; `reply_topics`: the clients' own."""
    topics = Topics(kafka.topic_prefix)
    commands = read_topic(kafka, topics.commands)
    if events is None:
        events = read_topic(kafka, topics.events)
    index = read_topic(kafka, topics.index)
    replies = read_topic(kafka, topics.replies)
    for name in reply_topics:  # replies are matched by correlation id, wherever they are
        for p, records in read_topic(kafka, name).items():
            replies.setdefault(p, []).extend(records)
    dlq = read_topic(kafka, topics.dlq)
    return check(commands, events, index, replies, dlq, len(commands), len(index))


def check(
    commands: dict[int, list[Record]],
    events: dict[int, list[Record]],
    index: dict[int, list[Record]],
    replies: dict[int, list[Record]],
    dlq: dict[int, list[Record]],
    partitions: int,
    index_partitions: int,
) -> Report:
    return _Checker(partitions, index_partitions).run(commands, events, index, replies, dlq)


Frozen = tuple[int, str, object]  # (seq, command id, payload) of an event


def _frozen(seq: int, command_id: str, payload: Any) -> Frozen:
    name, fields = payload
    return (seq, command_id, (name, tuple(sorted(fields.items()))))


def _text(data: bytes | None) -> str:
    return (data or b"").decode(errors="replace")


class _Checker:
    def __init__(self, partitions: int, index_partitions: int) -> None:
        self.partitions, self.index_partitions = partitions, index_partitions
        self.report = Report()
        self.event_of = decoder("WorkflowEvent")
        self.index_of = decoder("WorkflowIndexEvent")
        self.reply_of = decoder("Reply")
        self.event_streams: dict[str, _Stream] = defaultdict(_Stream)
        self.index_streams: dict[str, _Stream] = defaultdict(_Stream)
        self.found_events: Counter[tuple[str, str, object]] = Counter()
        self.expected_events: Counter[tuple[str, str, object]] = Counter()
        self.vids: set[str] = set()

    def run(
        self,
        commands: dict[int, list[Record]],
        events: dict[int, list[Record]],
        index: dict[int, list[Record]],
        replies: dict[int, list[Record]],
        dlq: dict[int, list[Record]],
    ) -> Report:
        report = self.report
        self._read_output(events, index)
        reply_by_corr: dict[bytes, list[Record]] = defaultdict(list)
        for records in replies.values():
            for r in records:
                reply_by_corr[r.headers.get("correlation-id", b"")].append(r)
                report.replies += 1
        dead_by_origin: dict[tuple[int, int], list[Record]] = defaultdict(list)
        for records in dlq.values():
            for r in records:
                report.dead_letters += 1
                report.reasons[_text(r.headers.get("dlq-reason"))] += 1
                try:
                    origin = (int(r.headers["dlq-partition"]), int(r.headers["dlq-offset"]))
                except (KeyError, ValueError):
                    report.problem(f"dead letter at offset {r.offset}: no origin {r.headers}")
                    continue
                dead_by_origin[origin].append(r)

        workflows: dict[str, Workflow] = {}
        first_reply: dict[str, bytes] = {}  # command id -> the reply bytes of its application
        seen_ids: set[str] = set()
        # A client that sends a command again (no reply in time) keeps its command id and
        # correlation id: then one reply per record, in the same order.
        corrs = [r.headers.get("correlation-id", b"") for rs in commands.values() for r in rs]
        per_corr = Counter(corrs)
        nth: Counter[bytes] = Counter()
        for p in sorted(commands):
            for r in commands[p]:
                report.commands += 1
                corr = r.headers.get("correlation-id", b"")
                found = reply_by_corr.get(corr, [])
                i, nth[corr] = nth[corr], nth[corr] + 1
                if len(found) != per_corr[corr]:
                    report.problem(
                        f"command {p}@{r.offset} (corr {corr!r}): {len(found)} replies "
                        f"for {per_corr[corr]} records"
                    )
                    if len(found) < per_corr[corr]:
                        report.missing_replies += i >= len(found)
                    else:
                        report.extra_replies += (len(found) - per_corr[corr]) * (i == 0)
                reply_record = found[i] if i < len(found) else None
                reply = self._reply(reply_record, f"{p}@{r.offset}")
                dead = dead_by_origin.pop((p, r.offset), [])
                verdict = judge(r.key, r.value, p, self.partitions)
                if verdict.command is None:
                    self._malformed(r, corr, dead, verdict.reason or "", reply)
                    continue
                report.valid += 1
                if dead:
                    report.problem(f"valid command {p}@{r.offset} dead-lettered: {dead[0].headers}")
                command = verdict.command
                command_id, wf_id = command["command_id"], command["workflow_id"]
                report.resent += command_id in seen_ids
                seen_ids.add(command_id)
                wf = workflows.setdefault(wf_id, Workflow(wf_id))
                vid_before, seq_before = wf.vid, wf.seq
                outcome = wf.decide(command)
                ids = self._match_events(outcome, command, wf)
                self._match_index(outcome, ids, vid_before, wf_id)
                for seq, payload in enumerate(outcome.events, seq_before):
                    body = _frozen(seq, command_id, payload)
                    self.expected_events[(wf_id, f"{wf_id}/{seq}", body)] += 1
                report.events_expected += len(outcome.events)
                report.index_expected += outcome.index is not None
                wf.apply(command_id, outcome, ids)
                report.errors[outcome.error or "ok"] += 1
                if reply is None or reply_record is None:
                    continue
                self._check_reply(reply, command, outcome, wf.reply_vid(outcome), vid_before)
                if outcome.repeated_vid is not None:
                    report.dedupe_replies += 1
                    if reply_record.value != first_reply.get(command_id):
                        report.problem(f"re-sent {command_id}: reply differs from the first")
                elif outcome.events:
                    first_reply[command_id] = reply_record.value or b""

        # Leftovers: output nobody asked for.
        for wf_id, stream in self.event_streams.items():
            if left := len(stream.records) - stream.at:
                report.problem(f"{wf_id}: {left} event records beyond what the model expects")
        for wf_id, stream in self.index_streams.items():
            if left := len(stream.records) - stream.at:
                report.problem(f"{wf_id}: {left} index records beyond what the model expects")
        for corr in set(reply_by_corr) - set(corrs):
            report.extra_replies += len(reply_by_corr[corr])
            report.problem(f"reply to a correlation id no command record has: {corr!r}")
        for origin, dead in dead_by_origin.items():
            report.problem(f"{len(dead)} dead letters for {origin}, not a command record")
        report.lost = sum((self.expected_events - self.found_events).values())
        report.duplicated = sum((self.found_events - self.expected_events).values())
        return report

    def _read_output(self, events: dict[int, list[Record]], index: dict[int, list[Record]]) -> None:
        """The processors' output per workflow, in offset order, and what it holds."""
        report = self.report
        for p, records in events.items():
            for r in records:
                key = _text(r.key)
                workflow = key.split("/", 1)[0]
                self.event_streams[workflow].records.append(r)
                if partition_of(workflow, self.partitions) != p:
                    report.problem(f"event {key} on partition {p}, not its workflow's")
                if r.value is not None:
                    report.events_found += 1
                    self.found_events[(workflow, key, self._event_body(r))] += 1
        for p, records in index.items():
            for r in records:
                workflow = _text(r.key)
                self.index_streams[workflow].records.append(r)
                report.index_found += r.value is not None
                if partition_of(workflow, self.index_partitions) != p:
                    report.problem(f"index record of {workflow} on partition {p}")

    def _event_body(self, r: Record) -> object:
        try:
            e = self.event_of(r.value)
        except Undecodable as exc:
            return f"undecodable: {exc}"
        return _frozen(e["seq"], e["command_id"], e["payload"])

    def _reply(self, record: Record | None, where: str) -> dict[str, Any] | None:
        if record is None:
            return None
        try:
            return self.reply_of(record.value)
        except Undecodable as exc:
            self.report.problem(f"reply to {where} at replies offset {record.offset}: {exc}")
            return None

    def _malformed(
        self, r: Record, corr: bytes, dead: list[Record], reason: str, reply: dict[str, Any] | None
    ) -> None:
        """A record the contract dead-letters with `reason`, answered MALFORMED."""
        report, where = self.report, f"{r.partition}@{r.offset}"
        report.malformed += 1
        report.errors["MALFORMED"] += 1
        for d in dead:
            report.dead_letter_reasons[_text(corr)] = _text(d.headers.get("dlq-reason"))
        if len(dead) != 1 or not _dead_letter_of(dead[0], r):
            report.problem(f"malformed {where}: {len(dead)} matching dead letters")
        elif (found := _text(dead[0].headers.get("dlq-reason"))) != reason:
            report.problem(f"malformed {where}: dlq-reason {found!r}, the contract says {reason!r}")
        malformed = (False, None, "MALFORMED")
        if reply is not None and (reply["ok"], reply["vid"], reply["error"]) != malformed:
            report.problem(f"malformed {where} answered {reply}")

    def _check_reply(
        self,
        reply: dict[str, Any],
        command: dict[str, Any],
        outcome: Outcome,
        vid: str | None,
        vid_before: str,
    ) -> None:
        expected = {
            "command_id": command["command_id"],
            "workflow_id": command["workflow_id"],
            "ok": outcome.ok,
            "vid": vid,
            "error": outcome.error,
        }
        got = {k: reply[k] for k in expected}
        if got != expected:
            name = command["command"][0]
            self.report.problem(f"{name} {command['command_id']}: reply {got}, expected {expected}")
        conflict = f"stored vid {vid_before}, expected vid {command['expected_vid']}"
        if outcome.error == "VERSION_CONFLICT" and conflict not in reply["message"]:
            self.report.problem(f"VERSION_CONFLICT message {reply['message']!r} lacks {conflict!r}")

    def _match_events(self, outcome: Outcome, command: dict[str, Any], wf: Workflow) -> list[str]:
        """Match the events `outcome` expects with the workflow's next records; their ids."""
        report, stream = self.report, self.event_streams[wf.workflow_id]
        ids: list[str] = []
        parent, command_id = wf.vid, command["command_id"]
        for n, (name, fields) in enumerate(outcome.events):
            seq = wf.seq + n
            key = f"{wf.workflow_id}/{seq}"
            where = f"event {key} (command {command_id})"
            r = stream.next()
            event = self._decoded_event(r, where)
            if r is None or event is None:
                ids.append(parent := f"<missing {key}>")
                continue
            same = (
                r.key == key.encode()
                and event["seq"] == seq
                and event["workflow_id"] == wf.workflow_id
                and event["command_id"] == command_id
                and event["payload"] == (name, fields)
                and event["parent"] == parent
            )
            if not same:
                report.problem(f"{where}: found {event} at {r.offset}, expected {name} {fields}")
            vid = event["event_id"]
            if not canonical_ids(event, ("workflow_id",), ("event_id", "parent", "command_id")):
                report.problem(f"{where}: ids not canonical: {event}")
            if not vid > event["parent"]:
                report.problem(f"{where}: id {vid} not above its parent {event['parent']}")
            headers = {k: _text(v) for k, v in r.headers.items()}
            wanted = {
                "event-type": EVENT_TYPES.get(event["payload"][0], "?"),
                "workflow-id": event["workflow_id"],
                "vid": vid,
                "parent": event["parent"],
                "seq": str(event["seq"]),
                "command-id": event["command_id"],
            }
            if {k: headers.get(k) for k in wanted} != wanted:
                report.problem(f"{where}: headers {headers} disagree with the body")
            if vid in self.vids:
                report.problem(f"{where}: vid {vid} seen twice")
            self.vids.add(vid)
            ids.append(parent := vid)
        for key in outcome.tombstones:
            r = stream.next()
            if r is None or r.value is not None or r.key != key.encode():
                report.problem(f"tombstone {key}: found {r and (r.key, r.offset)}")
        return ids

    def _decoded_event(self, r: Record | None, where: str) -> dict[str, Any] | None:
        if r is None:
            self.report.problem(f"{where}: missing")
            return None
        if r.value is None:
            self.report.problem(f"{where}: a tombstone for {r.key!r} instead")
            return None
        try:
            return self.event_of(r.value)
        except Undecodable as exc:
            self.report.problem(f"{where}: at offset {r.offset}: {exc}")
            return None

    def _match_index(self, outcome: Outcome, ids: list[str], vid_before: str, wf_id: str) -> None:
        if outcome.index is None:
            return
        stream = self.index_streams[wf_id]
        where = f"index {outcome.index[0]} of {wf_id}"
        r = stream.next()
        if r is None or r.value is None:
            self.report.problem(f"{where}: found {r and r.offset}")
        else:
            try:
                found: dict[str, Any] | str = self.index_of(r.value)
            except Undecodable as exc:
                found = str(exc)
            expected = {
                "registry_id": outcome.registry_id,
                "workflow_id": wf_id,
                "workflow_event_id": ids[0] if ids else vid_before,
                "payload": outcome.index,
            }
            if not isinstance(found, dict) or {k: found[k] for k in expected} != expected:
                self.report.problem(f"{where}: found {found}, expected {expected}")
            elif not canonical_ids(found, (), ("event_id",)):
                self.report.problem(f"{where}: event id {found['event_id']!r} is no ULID")
        if outcome.deletes:
            r = stream.next()
            if r is None or r.value is not None:
                self.report.problem(f"index tombstone of {wf_id}: found {r}")


def _dead_letter_of(dead: Record, r: Record) -> bool:
    """The original key and bytes; or, marked `dlq-truncated`, their beginnings."""
    if "dlq-truncated" in dead.headers:
        return (r.key or b"").startswith(dead.key or b"") and (r.value or b"").startswith(
            dead.value or b""
        )
    return dead.key == r.key and dead.value == r.value
