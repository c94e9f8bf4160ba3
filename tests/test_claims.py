"""Claims docs/processor.md and docs/contract.md make, pinned as they state them: the names
and numbers are written here, not imported from the code that should keep them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from duroot_stream.cli import main as cli
from duroot_stream.cli.options import EXIT_USAGE
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import NO_VC, Append, Command, ErrorCode, Init, PathUsage
from duroot_stream.ids import new_ulid, now_ms
from duroot_stream.kafka import header_bytes
from duroot_stream.wire import Codec, Topics, partition_for
from tests.kafka_helpers import read_all
from tests.processor_harness import PARTITIONS, Requester, running_processor

ROOT = Path(__file__).resolve().parents[1]
# docs/processor.md: "Settings that would break exactly-once are refused (exit 2, ...)".
REFUSED = [
    "transactional.id",
    "group.id",
    "enable.idempotence",
    "acks",
    "isolation.level",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "partitioner",
    "enable.gapless.guarantee",
]
# docs/contract.md, Dead letters: "`too-large` (over 990,000 bytes)".
COMMAND_LIMIT = 990_000


@pytest.mark.parametrize("setting", REFUSED)
def test_a_refused_setting_stops_the_processor_with_exit_2_naming_it(
    setting: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Refused before any connection: nothing listens at this address.
    argv = ["processor", "-b", "127.0.0.1:9", "-X", f"{setting}=x"]
    assert cli.main(argv) == EXIT_USAGE == 2
    err = capsys.readouterr().err
    assert f"refuses -X {setting} (" in err, err


def _append_of(size: int, workflow_id: str) -> Command:
    """An Append of one path whose encoded command is exactly `size` bytes."""
    codec = Codec()

    def command(path_len: int) -> Command:
        body = Append((PathUsage("p" * path_len, 1),))
        return Command(new_ulid(), workflow_id, NO_VC, now_ms(), body)

    base = len(codec.encode_command(command(0)))
    # The path's length prefix is a varint: grow until the size is met exactly.
    for path_len in range(size - base - 8, size - base + 1):
        cmd = command(path_len)
        if len(codec.encode_command(cmd)) == size:
            return cmd
    raise AssertionError(f"no Append of exactly {size} bytes")


@pytest.mark.broker
def test_the_command_limit_is_990000_bytes(kafka: KafkaConfig, requester: Requester) -> None:
    wf = str(uuid.uuid4())
    with running_processor(kafka):
        init = Command(new_ulid(), wf, NO_VC, now_ms(), Init(str(uuid.uuid4()), "/g", "h", "/r"))
        assert requester.request(init).ok
        at_limit = _append_of(COMMAND_LIMIT, wf)
        assert requester.request(at_limit).ok, "a command of the limit applies"
        over = _append_of(COMMAND_LIMIT + 1, wf)
        reply = requester.request(over)
        assert reply.error is ErrorCode.MALFORMED, reply
    letters = read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).dlq)
    assert [header_bytes(m, "dlq-reason") for m in letters] == [b"too-large"]
    assert header_bytes(letters[0], "dlq-partition") == str(partition_for(wf, PARTITIONS)).encode()


def test_the_documents_state_these_claims() -> None:
    """What this module pins is what the documents say (they are the claims)."""
    contract = (ROOT / "docs" / "contract.md").read_text()
    assert "`too-large` (over 990,000 bytes)" in contract
    guide = " ".join((ROOT / "docs" / "processor.md").read_text().split())
    claim = guide.split("Settings that would break exactly-once are refused", 1)[1][:400]
    assert all(f"`{setting}`" in claim for setting in REFUSED), claim
