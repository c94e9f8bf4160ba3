"""What the client subcommands print, and how their errors end: one line on
stderr and an exit code (`options`): a rejected command, a failed or missing
workflow 1, bad arguments 2, Kafka or the processor not answering 3, a workflow
not complete yet 4. Also used by `run`, which prints a result like `get`."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from duroot_stream.client import CommandRejected, DuResult, DuRootError, Unavailable, WaitTimeout

from .options import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_UNAVAILABLE, EXIT_USAGE


def run_handler(name: str, body: Callable[[], int]) -> int:
    """Run a handler body; map errors to exit codes and one line on stderr."""
    try:
        return body()
    except CommandRejected as exc:
        error(name, f"{exc.rejected.code.value}: {exc}")
        return EXIT_FAILED
    except WaitTimeout as exc:
        error(name, str(exc))
        return EXIT_INCOMPLETE
    except Unavailable as exc:
        error(name, str(exc))
        return EXIT_UNAVAILABLE
    except DuRootError as exc:
        error(name, str(exc))
        return EXIT_FAILED
    except (ValueError, OSError) as exc:
        error(name, str(exc))
        return EXIT_USAGE


def error(name: str, message: str) -> None:
    print(f"duroot-stream {name}: {message}", file=sys.stderr)


def print_json(obj: dict[str, Any], out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(obj, ensure_ascii=False) + "\n")


def print_du(
    result: DuResult,
    out: TextIO,
    *,
    verbose: bool = False,
    as_json: bool = False,
    human: bool = False,
    end: str = "\n",
) -> None:
    """`<usage> <path>` per line, as nog's `nogfsoctl du get root` prints them."""
    if as_json:
        if verbose:
            print_json(
                {
                    "workflow_id": result.workflow_id,
                    "vid": result.vid,
                    "complete": result.complete,
                    "status_code": result.status_code,
                    "status_message": result.status_message,
                },
                out,
            )
        for line in result.lines:
            print_json({"usage": line.usage, "path": line.path}, out)
        return
    if human:
        sizes = [human_size(line.usage) for line in result.lines]
        width = max(map(len, sizes), default=0)
        out.writelines(
            f"{size:>{width}} {line.path}{end}"
            for size, line in zip(sizes, result.lines, strict=True)
        )
    else:
        out.writelines(f"{line.usage} {line.path}{end}" for line in result.lines)
    if verbose:  # after the lines, as nogfsoctl du get --verbose prints it
        out.write(f"# workflowVid: {result.vid}{end}")


def human_size(n: int) -> str:
    """Bytes as `du -h` shows them: 512, 1.2K, 34M, 1.0G (powers of 1024)."""
    if n < 1024:
        return str(n)
    value = float(n)
    for unit in "KMGTPE":
        value /= 1024
        if value < 1024 or unit == "E":
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    raise AssertionError("unreachable")


def print_fields(rows: Sequence[tuple[str, str]], out: TextIO) -> None:
    width = max(len(k) for k, _ in rows)
    out.writelines(f"{k:<{width}}  {v}\n" for k, v in rows)


def print_table(header: list[str], rows: list[list[str]], out: TextIO) -> None:
    """Columns aligned to the widest cell; the last column is not padded."""
    cells = [header, *([printable(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        out.write("  ".join([*padded, row[-1]]) + "\n")


def iso_time(ms: int | None) -> str | None:
    """Milliseconds since the epoch as `2026-01-02T03:04:05.678Z`; None stays None."""
    if ms is None or ms <= 0:
        return None
    t = datetime.fromtimestamp(ms / 1000, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def printable(text: str) -> str:
    """Control characters escaped, so one value stays on one table line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
