"""`duroot-stream dlq list|show|replay`: act on the dead letters."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime

from duroot_stream.client import DuRootError
from duroot_stream.client.deadletters import (
    DEFAULT_MAX_REPLAYS,
    DeadLetter,
    DeadLetters,
    Replayed,
    Selection,
    describe_value,
)
from duroot_stream.wire import Codec

from . import options
from .options import Subcommands, kafka_config, kafka_options
from .values import duration_s


def add_commands(sub: Subcommands) -> None:
    """Register dlq (list, show, replay) on `duroot-stream`'s parser."""
    p = sub.add_parser("dlq", help="list, show and replay dead letters")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def selection_options(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--reason", action="append", default=[], help="only this reason (repeatable)"
        )
        q.add_argument("--since", type=duration_s, help="only dead letters younger than this")
        q.add_argument("--before", type=duration_s, help="only dead letters older than this")
        q.add_argument("--from", dest="first", type=int, metavar="OFFSET", help="first offset")
        q.add_argument("--to", dest="last", type=int, metavar="OFFSET", help="last offset")
        kafka_options(q)

    q = actions.add_parser("list", help="one line per dead letter: offset, age, reason, source")
    selection_options(q)
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(handler=cmd_list)

    q = actions.add_parser("show", help="one dead letter: headers and the value decoded")
    q.add_argument("offset", type=int)
    q.add_argument("--partition", type=int, default=0)
    kafka_options(q)
    q.set_defaults(handler=cmd_show)

    q = actions.add_parser("replay", help="send selected dead letters back to the commands")
    selection_options(q)
    q.add_argument("--dry-run", action="store_true", help="say what would be replayed")
    q.add_argument(
        "--max-replays",
        type=int,
        default=DEFAULT_MAX_REPLAYS,
        help="never replay a record that was replayed this often already",
    )
    q.set_defaults(handler=cmd_replay)


def _selection(args: argparse.Namespace) -> Selection:
    now_ms = int(time.time() * 1000)
    return Selection(
        reasons=frozenset(args.reason),
        since_ms=None if args.since is None else now_ms - int(args.since * 1000),
        until_ms=None if args.before is None else now_ms - int(args.before * 1000),
        first_offset=args.first,
        last_offset=args.last,
    )


def _age(letter: DeadLetter) -> str:
    seconds = max(0, int(time.time() - letter.timestamp_ms / 1000))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _key(letter: DeadLetter) -> str:
    if letter.key is None:
        return "(null)"
    text = letter.key.decode("utf-8", "replace")
    return text if len(text) <= 40 else text[:37] + "..."


def _fail(name: str, exc: Exception) -> int:
    print(f"duroot-stream dlq {name}: {exc}", file=sys.stderr)
    return options.EXIT_UNAVAILABLE if isinstance(exc, DuRootError) else options.EXIT_FAILED


def cmd_list(args: argparse.Namespace) -> int:
    try:
        for letter in DeadLetters(kafka_config(args)).read(_selection(args)):
            if args.json:
                record = {
                    "partition": letter.partition,
                    "offset": letter.offset,
                    "timestamp_ms": letter.timestamp_ms,
                    "reason": letter.reason,
                    "error": letter.error,
                    "source": letter.source,
                    "key": None if letter.key is None else letter.key.decode("utf-8", "replace"),
                    "replays": letter.replays,
                }
                print(json.dumps(record, ensure_ascii=False))
            else:
                print(
                    f"{letter.offset:>8} {_age(letter):>5} {letter.reason:<12} "
                    f"{letter.source:<28} {_key(letter)}  {letter.error[:80]}"
                )
    except DuRootError as exc:
        return _fail("list", exc)
    return options.EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    config = kafka_config(args)
    try:
        letter = DeadLetters(config).get(args.offset, args.partition)
    except (DuRootError, LookupError) as exc:
        return _fail("show", exc)
    when = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC).isoformat()
    print(f"dead letter {letter.partition}/{letter.offset} at {when}")
    print(f"reason: {letter.reason}\nerror: {letter.error}\nsource: {letter.source}")
    print(f"key: {_key(letter)}\nheaders:")
    for name, value in letter.headers:
        shown = "(null)" if value is None else value.decode("utf-8", "replace")[:200]
        print(f"  {name}: {shown!r}")
    print(f"value: {describe_value(Codec(config.schema_registry_url), letter.value)}")
    return options.EXIT_OK


def cmd_replay(args: argparse.Namespace) -> int:
    letters = DeadLetters(kafka_config(args))
    counts = {"sent": 0, "skipped": 0}

    def progress(result: Replayed) -> None:
        counts[
            "sent" if result.sent or (args.dry_run and result.why == "dry run") else "skipped"
        ] += 1
        print(f"{result.letter.offset:>8} {result.letter.reason:<12} {result.why}", flush=True)

    try:
        letters.replay(
            letters.read(_selection(args)),
            dry_run=args.dry_run,
            max_replays=args.max_replays,
            progress=progress,
        )
    except DuRootError as exc:
        return _fail("replay", exc)
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {counts['sent']}, skipped {counts['skipped']}", file=sys.stderr)
    return options.EXIT_OK
