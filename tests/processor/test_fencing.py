"""Who an heir may fence (fencing.py), without a broker: only an owner named by our
own offset metadata, not this instance, and not still in the group."""

from __future__ import annotations

import argparse

import pytest

from duroot_stream.cli.processor import _seconds_or_off
from duroot_stream.processor.fencing import Owner, dead_owners, owner_metadata, parse_owner

OWN = "duroot-processor-heir"


def test_owner_metadata_round_trips() -> None:
    metadata = owner_metadata("duroot-processor-host-a", "rdkafka-1234")
    assert parse_owner(metadata) == Owner("duroot-processor-host-a", "rdkafka-1234")


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        "",
        "mark-of-another-tool",
        "duroot-owner ",
        "duroot-owner only-one",
        "duroot-owner a b c",
    ],
)
def test_metadata_not_ours_names_nobody(metadata: str | None) -> None:
    assert parse_owner(metadata) is None


def test_a_dead_owner_is_fenced_once_for_all_its_partitions() -> None:
    dead = Owner("duroot-processor-a", "member-a")
    found = dead_owners({0: dead, 3: dead, 4: None}, OWN, {"member-h"}, {OWN})
    assert found == {"duroot-processor-a": [0, 3]}


def test_an_owner_still_in_the_group_is_never_fenced() -> None:
    by_member = Owner("duroot-processor-b", "member-b")
    by_client = Owner("duroot-processor-c", "member-c-before-its-restart")
    found = dead_owners(
        {1: by_member, 2: by_client}, OWN, {"member-b", "member-c2"}, {"duroot-processor-c"}
    )
    assert found == {}


def test_this_instance_never_fences_itself() -> None:
    assert dead_owners({5: Owner(OWN, "member-gone")}, OWN, set(), set()) == {}


@pytest.mark.parametrize(("text", "seconds"), [("off", None), ("0.5", 0.5), ("2", 2.0)])
def test_fence_after_takes_seconds_or_off(text: str, seconds: float | None) -> None:
    assert _seconds_or_off(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1", ""])
def test_fence_after_refuses_anything_else(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _seconds_or_off(text)
