"""The scheduler on a real broker and processor: each root begun exactly once per period,
with two schedulers and a restart; a root still running is not begun again; a begin
that fails is counted and tried again."""

from __future__ import annotations

import uuid

import pytest

from duroot_stream.client import DuRootClient, Root
from duroot_stream.config import KafkaConfig
from duroot_stream.ids import now_ms
from duroot_stream.scheduler import Scheduler, SchedulerSettings
from tests.kafka_helpers import wait_until
from tests.processor_harness import running_processor, setup_topics
from tests.usage_helpers import inits_once_visible, running

pytestmark = pytest.mark.broker

HOUR_S = 3600.0
REG = str(uuid.uuid4())
ROOTS = {f"/g/sched{i}": Root(REG, "files1", f"/srv/sched{i}") for i in range(3)}


def value(scheduler: Scheduler, name: str, **labels: str) -> float:
    found = scheduler.metrics.registry.get_sample_value(name, labels)
    return found or 0.0


def test_two_schedulers_and_a_restart_begin_each_root_once_per_period(
    kafka: KafkaConfig,
) -> None:
    setup_topics(kafka)
    settings = SchedulerSettings(kafka, ROOTS, every_s=HOUR_S, spread_s=0)
    # One moment for all of them: whatever the wall clock does, they share one period.
    now = now_ms()
    period = settings.plan.period(now)
    with running_processor(kafka):
        with (
            running(Scheduler(settings, clock=lambda: now), "scheduler 1") as first,
            running(Scheduler(settings, clock=lambda: now), "scheduler 2") as second,
        ):
            pass  # ready: each has begun (or found begun) every root due
        with running(Scheduler(settings, clock=lambda: now), "scheduler 1 again") as again:
            pass
        schedulers = (first, second, again)
        applied = inits_once_visible(kafka, dict.fromkeys(ROOTS, 1))
        begun = {name: wfs for name, wfs in applied.items() if name in ROOTS}
        assert begun == {
            name: [settings.plan.workflow_id(period, name, root)] for name, root in ROOTS.items()
        }
        assert sum(value(s, "duroot_schedule_begun_total") for s in schedulers) == len(ROOTS)
        skipped = [
            value(s, "duroot_schedule_skipped_total", reason="already_begun") for s in schedulers
        ]
        assert sum(skipped) == 2 * len(ROOTS)
        assert skipped[2] == len(ROOTS)  # the restarted one found them all begun
        assert not any(value(s, "duroot_schedule_begin_failures_total") for s in schedulers)

        # The next period: the runs of this one are still active, except one that
        # completed: only that root is begun again.
        done, *running_roots = ROOTS
        with DuRootClient(kafka) as client:
            client.commit(begun[done][0])
        later = now + round(HOUR_S * 1000)
        with running(Scheduler(settings, clock=lambda: later), "next period") as nxt:
            pass
        begun_now = inits_once_visible(kafka, {**dict.fromkeys(ROOTS, 1), done: 2})
        # (Read across partitions: in no particular order.)
        assert sorted(begun_now[done]) == sorted(
            [begun[done][0], settings.plan.workflow_id(period + 1, done, ROOTS[done])]
        )
        assert all(begun_now[name] == begun[name] for name in running_roots)
        assert value(nxt, "duroot_schedule_begun_total") == 1
        assert value(nxt, "duroot_schedule_skipped_total", reason="active") == 2


def test_a_begin_that_fails_is_counted_and_tried_again(kafka: KafkaConfig) -> None:
    setup_topics(kafka)
    name = "/g/retry"
    settings = SchedulerSettings(
        kafka,
        {name: Root(REG, "files1", "/srv/retry")},
        every_s=HOUR_S,
        spread_s=0,
        command_timeout_s=2.0,
        retry_s=0.5,
    )
    # No processor yet: the Init goes unanswered.
    with running(Scheduler(settings), "scheduler") as scheduler:
        wait_until(
            lambda: value(scheduler, "duroot_schedule_begin_failures_total") >= 1,
            timeout=settings.command_timeout_s * 10,
            what="a failed begin",
        )
        assert value(scheduler, "duroot_schedule_begun_total") == 0
        with running_processor(kafka):
            wait_until(
                lambda: value(scheduler, "duroot_schedule_begun_total") == 1,
                # Each try waits for its reply, then for the retry; the first replies of a
                # new processor may take more than one try under load.
                timeout=(settings.command_timeout_s + settings.retry_s) * 20,
                what="the begin tried again",
            )
    assert len(inits_once_visible(kafka, {name: 1})[name]) == 1
