"""Resident memory of restored workflow state, measured in a process of its own.

Run by `benchmarks/processor.py` (memory figure): imports the processor,
restores an empty events topic (so librdkafka, the codec and the imports are
all loaded: the empty process), reads VmRSS from /proc/self/status, then
restores the loaded topic, keeps the workflows, collects garbage and reads
VmRSS again: what the processor holds, as the restore leaves it (the restore
gives back the memory it freed, processor/heap.py; the probe adds nothing).
Also the bytes the states themselves hold (`sys.getsizeof` of each object,
shared ones once). Then what a warm standby (`processor
--standbys`) holds for the same workflows: their state records as the standby
keeps them (`StateRead`: key and undecoded value per workflow), the bytes of those
objects (RSS would hide them in the heap the restore freed).
Prints one JSON object.

`python -m benchmarks.memory_probe --bootstrap-servers B --events-topic T
--partitions N --empty-topic E`
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections.abc import Sequence

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import WorkflowState
from duroot_stream.processor import restore_partitions
from duroot_stream.processor.state_store import StateRead
from duroot_stream.wire import Codec, encode_state


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def held_bytes(restored: dict[int, tuple[dict[str, WorkflowState], int]]) -> int:
    """What the workflows' dicts and states hold: `sys.getsizeof` summed over the
    objects, each shared one (interned roots, enum members, small ints) once."""
    seen: set[int] = set()
    total = 0
    for workflows, _ in restored.values():
        total += sys.getsizeof(workflows)
        for workflow_id, state in workflows.items():
            for obj in (workflow_id, state, *referents(state)):
                if id(obj) not in seen:
                    seen.add(id(obj))
                    total += sys.getsizeof(obj)
    return total


def referents(state: WorkflowState) -> tuple[object, ...]:
    """The objects a state refers to. Compiled, its integers are unboxed (no objects),
    and it is acyclic: no `tp_traverse`, so `gc.get_referents` finds nothing and its
    fields are read instead (the private ones: a compact state makes its vid and roots
    when they are read)."""
    if gc.is_tracked(state):
        return tuple(gc.get_referents(state))
    fields = (state.workflow_id, state.code, state.registry_id, state.host, state.recent)
    return (*fields, state._global_root, state._host_root, state._vid_text)


def standby_bytes(restored: dict[int, tuple[dict[str, WorkflowState], int]]) -> int:
    """What a standby's reads of these workflows' state records hold: `sys.getsizeof`
    of each read's dict, keys and values."""
    total = 0
    for workflows, _ in restored.values():
        read = StateRead()
        for workflow_id, state in workflows.items():
            read.values[workflow_id.encode()] = encode_state(state)
        total += sys.getsizeof(read.values)
        total += sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in read.values.items())
    return total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory_probe")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--events-topic", required=True)
    parser.add_argument("--empty-topic", required=True)
    parser.add_argument("--partitions", type=int, required=True)
    args = parser.parse_args(argv)
    kafka = KafkaConfig(bootstrap_servers=args.bootstrap_servers)
    codec = Codec()
    partitions = list(range(args.partitions))

    restore_partitions(kafka, args.empty_topic, partitions, codec)
    gc.collect()
    empty = rss_bytes()

    started = time.monotonic()
    restored = restore_partitions(kafka, args.events_topic, partitions, codec)
    seconds = time.monotonic() - started
    gc.collect()
    rss = rss_bytes()
    workflows = sum(len(w) for w, _ in restored.values())
    held = held_bytes(restored)
    events = sum(n for _, n in restored.values())
    standby = standby_bytes(restored)
    print(
        json.dumps(
            {
                "workflows": workflows,
                "events": events,
                "restore_s": round(seconds, 3),
                "rss_empty_bytes": empty,
                "rss_bytes": rss,
                "bytes_per_workflow": (rss - empty) / workflows,
                "live_bytes_per_workflow": held / workflows,
                "standby_bytes_per_workflow": standby / workflows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
