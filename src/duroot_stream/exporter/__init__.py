"""The usage exporter: the latest du of every root, as Prometheus metrics, from the
events topic (`duroot-stream exporter`)."""

from .families import ExporterMetrics, UsageCollector
from .follower import DEFAULT_MAX_DEPTH, DEFAULT_MAX_SERIES, Exporter, ExporterSettings
from .usage import Measured, RootKey, RootUsage, RunOutcome, UsageTable, depth

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SERIES",
    "Exporter",
    "ExporterMetrics",
    "ExporterSettings",
    "Measured",
    "RootKey",
    "RootUsage",
    "RunOutcome",
    "UsageCollector",
    "UsageTable",
    "depth",
]
