"""`duroot-stream processor` with a test fault, for tests that run processors as
processes (`ProcessorProcess(..., fault=...)` starts it):

    python -m tests.reliability.faulty_processor FAULT... -- processor ARGS...

- `--stall-dir DIR`: when `DIR/<instance>.arm` exists, the next commit removes it,
  creates `<instance>.stalled` and stalls before `commit_transaction` until
  `<instance>.resume` appears, then removes both: a zombie, as
  test_zombie_stall.py makes one (KAFKA-10167); with `--stall-at fence`, before
  a restore fences a previous owner instead (test_heir_kill.py);
- `--hang CALL`: the transactional call CALL never returns;
- `--hung-call-s S`: the hung-call exit after S seconds instead of the CLI's 60.

The processor is the CLI's (`cli.processor.cli_main`), given the fault through
`Processor(..., faults=...)`: nothing in the package reads a test's environment.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from duroot_stream import logs
from duroot_stream.cli import processor as processor_command
from duroot_stream.cli.main import build_parser
from duroot_stream.processor import HUNG_CALL_S
from tests.processor.client_faults import ClientFaults, Hang

T = TypeVar("T")

STALL_MAX_S = 600.0


class FileStall(ClientFaults):
    """The stall of the module docstring, steered by files in `directory`."""

    def __init__(self, directory: Path, instance_id: str, at: str = "commit_transaction") -> None:
        super().__init__()
        self.at = at
        self.arm, self.stalled, self.resume = (
            directory / f"{instance_id}.{name}" for name in ("arm", "stalled", "resume")
        )

    def pause(self, what: str) -> None:
        if what != self.at or not self.arm.exists():
            return
        self.arm.unlink()
        self.injected += 1
        self.stalled.touch()
        deadline = time.monotonic() + STALL_MAX_S
        while not self.resume.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.resume.unlink(missing_ok=True)
        self.stalled.unlink()

    def call(self, what: str, call: Callable[[], T]) -> T:
        return call()


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    fault = argparse.ArgumentParser(prog="faulty_processor")
    fault.add_argument("--stall-dir", type=Path)
    fault.add_argument(
        "--stall-at", default="commit_transaction", choices=("commit_transaction", "fence")
    )
    fault.add_argument("--hang", metavar="CALL")
    fault.add_argument("--hung-call-s", type=float, default=HUNG_CALL_S)
    wanted = fault.parse_args(argv[:split])
    args = build_parser().parse_args(argv[split + 1 :])
    assert args.handler is processor_command.cli_main, "usage: FAULT... -- processor ARGS..."
    logs.setup(args.log_level, args.log_format)
    faults: ClientFaults | None = None
    if wanted.stall_dir is not None:
        faults = FileStall(wanted.stall_dir, args.instance_id, wanted.stall_at)
    elif wanted.hang is not None:
        faults = Hang(wanted.hang)
    code: int = processor_command.cli_main(args, faults=faults, hung_call_s=wanted.hung_call_s)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
