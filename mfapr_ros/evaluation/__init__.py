"""Evaluation metrics and reports (ROS-free): shared by `mfapr evaluate`, `mfapr eval-bag` and `evaluator_node`.

Importing this package pulls numpy only; matplotlib is imported when a report draws its figures.
"""

from __future__ import annotations

from .metrics import (
    PERCENTILES,
    baseline_metrics,
    bin_label,
    compute_metrics,
    latency_stats,
    mean_pose_baseline,
    metrics_from_errors,
    pose_errors,
)
from .report import FILES, format_summary, load_report, markdown_summary, print_summary, write_report

__all__ = [
    "FILES",
    "PERCENTILES",
    "baseline_metrics",
    "bin_label",
    "compute_metrics",
    "format_summary",
    "latency_stats",
    "load_report",
    "markdown_summary",
    "mean_pose_baseline",
    "metrics_from_errors",
    "pose_errors",
    "print_summary",
    "write_report",
]
