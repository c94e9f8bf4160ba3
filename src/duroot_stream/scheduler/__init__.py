"""The scheduler: a du of every root of a roots file once per period
(`duroot-stream schedule`)."""

from .periodic import SKIP_REASONS, Scheduler, SchedulerMetrics, SchedulerSettings
from .plan import NAMESPACE, Plan

__all__ = [
    "NAMESPACE",
    "SKIP_REASONS",
    "Plan",
    "Scheduler",
    "SchedulerMetrics",
    "SchedulerSettings",
]
