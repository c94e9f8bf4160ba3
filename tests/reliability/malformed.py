"""Malformed command records of every kind, for the bad input storm: hand-made Avro,
so that records the codec would refuse to write can be made too. `Driver`
(workload.py) interleaves them with the walkers' commands."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

from duroot_stream.domain import (
    NO_VC,
    Append,
    Command,
    Commit,
    ErrorCode,
    Init,
    PathUsage,
    Reply,
)
from duroot_stream.ids import new_ulid, now_ms
from duroot_stream.wire import Codec, partition_for


@dataclass
class Malformed:
    kind: str
    value: bytes | None
    partition: int
    key: bytes  # a real workflow id: the record's own, where it has one


def _zigzag(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    z &= (1 << 64) - 1
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _avro_str(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return _zigzag(len(data)) + data


def raw_command(
    prefix: bytes,
    command_id: str | bytes,
    workflow_id: str | bytes,
    expected_vid: str | bytes,
    branch: int,
    body: bytes = b"",
) -> bytes:
    """A Command record written field by field: no checks at all."""
    return (
        prefix
        + _avro_str(command_id)
        + _avro_str(workflow_id)
        + _avro_str(expected_vid)
        + _zigzag(now_ms())
        + _zigzag(branch)
        + body
    )


ONE_MB = 1_000_000


@dataclass
class MalformedFactory:
    """Makes malformed command records of every kind, at random."""

    rng: random.Random
    partitions: int
    counts: dict[str, int] = field(default_factory=dict)
    big_budget: int = 12  # records of about 1 MB among them

    def __post_init__(self) -> None:
        codec = Codec()
        wf = str(uuid.uuid4())
        self._wf = wf
        self._record_wf = wf  # the workflow id of the record being made
        self._init = codec.encode_command(
            Command(new_ulid(), wf, NO_VC, now_ms(), Init(str(uuid.uuid4()), "/g", "h", "/r"))
        )
        self._append = codec.encode_command(
            Command(new_ulid(), wf, NO_VC, now_ms(), Append((PathUsage("a/b", 4096),) * 20))
        )
        self._prefix = self._init[:10]
        self._other_records = [
            codec.encode_reply(Reply(new_ulid(), wf, True, new_ulid(), None, "")),
            codec.encode_reply(Reply(None, None, False, None, ErrorCode.MALFORMED, "x")),
        ]

    def __call__(self) -> Malformed:
        rng = self.rng
        kinds = [
            "random",
            "empty",
            "null",
            "truncated",
            "fingerprint",
            "confluent",
            "marker",
            "invalid-id",
            "trailing",
            "oversized",
            "unknown-command",
            "other-record",
            "bad-utf8",
            "misrouted",
            "bad-key",
            "invalid-argument",
        ]
        kind = rng.choice(kinds)
        if kind == "oversized" and self.big_budget > 0 and rng.random() < 0.1:
            kind = rng.choice(["oversized-1mb", "oversized-valid"])
            self.big_budget -= 1
        # Keyed by a real workflow id on its partition, the record's own where it
        # names one: only what is wrong with the value (or the route) can refuse it.
        self._record_wf = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        value = getattr(self, "_" + kind.replace("-", "_"))()
        self.counts[kind] = self.counts.get(kind, 0) + 1
        key = self._record_wf
        partition = partition_for(key, self.partitions)
        if kind == "misrouted":
            partition = (partition + 1 + rng.randrange(self.partitions - 1)) % self.partitions
        if kind == "bad-key":
            key = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        return Malformed(kind, value, partition, key.encode())

    def _random(self) -> bytes:
        return self.rng.randbytes(self.rng.randint(1, 300))

    def _empty(self) -> bytes:
        return b""

    def _null(self) -> None:
        return None

    def _truncated(self) -> bytes:
        self._record_wf = self._wf
        good = self.rng.choice([self._init, self._append])
        return good[: self.rng.randint(1, len(good) - 1)]

    def _fingerprint(self) -> bytes:
        self._record_wf = self._wf
        return b"\xc3\x01" + self.rng.randbytes(8) + self._init[10:]

    def _confluent(self) -> bytes:
        self._record_wf = self._wf
        return b"\x00" + self.rng.randbytes(4) + self._init[10:]

    def _marker(self) -> bytes:
        self._record_wf = self._wf
        return b"\xc3" + bytes([self.rng.choice([0, 2, 0xFF])]) + self._init[2:]

    def _invalid_id(self) -> bytes:
        good = (new_ulid(), self._record_wf, NO_VC)
        bad = self.rng.choice(
            [
                (new_ulid().lower(), good[1], good[2]),
                ("not-a-ulid", good[1], good[2]),
                ("", good[1], good[2]),
                ("8" + new_ulid()[1:], good[1], good[2]),  # overflows 128 bits
                (good[0], "not-a-uuid", good[2]),
                (good[0], good[1].upper(), good[2]),
                (good[0], "", good[2]),
                (good[0], good[1], "00000000000000000000000003x"),
                (good[0], good[1], "LIL0000000000000000000000I"),
            ]
        )
        return raw_command(self._prefix, *bad, 2)

    def _invalid_argument(self) -> bytes:
        """A good envelope, an Init whose registry id is no UUID: applied, answered
        INVALID_ARGUMENT, not dead-lettered."""
        body = _avro_str("registry") + _avro_str("/g") + _avro_str("h") + _avro_str("/r")
        return raw_command(self._prefix, new_ulid(), self._record_wf, NO_VC, 0, body)

    def _trailing(self) -> bytes:
        self._record_wf = self._wf
        return self.rng.choice([self._init, self._append]) + self.rng.randbytes(
            self.rng.randint(1, 20)
        )

    def _oversized(self) -> bytes:
        """Counts and lengths that claim far more than the record holds."""
        ids = (new_ulid(), self._record_wf, NO_VC)
        return self.rng.choice(
            [
                raw_command(self._prefix, *ids, 1, _zigzag(1 << 40) + b"\x02a\x02"),  # 2^40 paths
                raw_command(self._prefix, *ids, 1, _zigzag(-(1 << 40)) + _zigzag(1 << 50)),
                raw_command(self._prefix, *ids, 1, _zigzag(1) + _zigzag(1 << 50) + b"a"),
                raw_command(self._prefix, *ids, 0, _zigzag(1 << 62)),
                self._prefix + b"\xff" * 11,  # a varint longer than 10 bytes
                raw_command(self._prefix, *ids, 1, _zigzag(-1) + b"\x02a\x02"),  # count -1
            ]
        )

    def _oversized_1mb(self) -> bytes:
        """An Append of about 1 MB, around the clients' and the broker's message size
        limits, that is malformed (its last path is cut short): its dead letter, the
        same bytes plus headers, is bigger still."""
        n = 40_000
        paths = b"".join(_avro_str(f"dir/{i:020d}") + _zigzag(4096) for i in range(n))
        body = _zigzag(n) + paths + _zigzag(0)
        record = raw_command(self._prefix, new_ulid(), self._record_wf, NO_VC, 1, body)
        size = self.rng.randint(ONE_MB - 10_000, 1_048_000)  # around librdkafka's 1e6 limit
        return record[:size]

    def _oversized_valid(self) -> bytes:
        """A well-formed Append of one path, about 1 MB: its event, a little bigger
        still, would not fit in a Kafka message, so it is refused as too large."""
        size = self.rng.randint(ONE_MB - 10_000, 1_040_000)
        body = Append((PathUsage("p" * size, 1),))
        self._record_wf = self._wf
        return Codec().encode_command(Command(new_ulid(), self._wf, NO_VC, now_ms(), body))

    def _unknown_command(self) -> bytes:
        branch = self.rng.choice([7, 8, 63, 1000, -1, -7])
        return raw_command(self._prefix, new_ulid(), self._record_wf, NO_VC, branch)

    def _other_record(self) -> bytes:
        return self.rng.choice(self._other_records)

    def _bad_utf8(self) -> bytes:
        body = _avro_str(b"\xff\xfe") + _avro_str("/g") + _avro_str("h") + _avro_str("/r")
        return raw_command(self._prefix, new_ulid(), self._record_wf, NO_VC, 0, body)

    def _misrouted(self) -> bytes:
        self._record_wf = self._wf
        return Codec().encode_command(Command(new_ulid(), self._wf, NO_VC, now_ms(), Commit()))

    def _bad_key(self) -> bytes:
        """A good command on its workflow's partition, keyed by another workflow id."""
        self._record_wf = self._wf
        return Codec().encode_command(Command(new_ulid(), self._wf, NO_VC, now_ms(), Commit()))
