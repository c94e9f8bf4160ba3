"""glibc's malloc told to give back what a restore frees (processor/heap.py): a block
freed in another thread's arena, after a large one freed has raised glibc's dynamic
trim threshold, stays resident through `malloc_trim`; with the thresholds settled it
does not (each case in a process of its own: the thresholds are the process's). And a
restore settles them before its reads and gives back after them."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import WorkflowState
from duroot_stream.processor import heap, restore
from duroot_stream.wire import Codec

GLIBC = platform.libc_ver()[0] == "glibc"

MIB = 2**20

# Frees a 16 MiB block (mapped, so it raises the thresholds unless settled), then makes,
# touches and frees an 8 MiB block in a thread of its own (its own arena), gives back
# what is free (`heap.give_back`) and prints how much more is resident than before.
CASE = """
import ctypes, json, sys, threading
from duroot_stream.processor import heap

def rss():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) * 1024 for l in status if l.startswith("VmRSS:"))

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
settled = heap.settle() if sys.argv[1] == "settled" else False
libc.free(libc.malloc(16 << 20))
heap.give_back()
before = rss()

def in_a_thread():
    block = libc.malloc(8 << 20)
    ctypes.memset(block, 1, 8 << 20)
    libc.free(block)

thread = threading.Thread(target=in_a_thread)
thread.start()
thread.join()
heap.give_back()
print(json.dumps({"settled": settled, "kept": rss() - before}))
"""


def kept_after_a_thread(case: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CASE, case], capture_output=True, text=True, check=True, timeout=60
    )
    found: dict[str, object] = json.loads(out.stdout)
    return found


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_a_thread_arena_keeps_its_freed_top_through_malloc_trim_unless_settled() -> None:
    unsettled = kept_after_a_thread("unsettled")
    settled = kept_after_a_thread("settled")
    assert isinstance(unsettled["kept"], int) and isinstance(settled["kept"], int)
    assert unsettled["kept"] >= 7 * MIB, unsettled  # the cause heap.py is there for
    assert settled == {"settled": True, "kept": settled["kept"]}
    assert settled["kept"] < MIB, settled


def test_a_restore_settles_the_heap_before_its_reads_and_gives_back_after_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def read(*args: object) -> dict[int, tuple[dict[str, WorkflowState], int]]:
        calls.append("read")
        return {0: ({}, 0)}

    monkeypatch.setattr(restore, "_read_partitions", read)

    def settle() -> bool:
        calls.append("settle")
        return True

    monkeypatch.setattr(heap, "settle", settle)
    monkeypatch.setattr(heap, "give_back", lambda: calls.append("give_back"))
    kafka = KafkaConfig(bootstrap_servers="unused:9092")

    assert restore.restore_partitions(kafka, "events", [0], Codec()) == {0: ({}, 0)}
    assert calls == ["settle", "read", "give_back"]
