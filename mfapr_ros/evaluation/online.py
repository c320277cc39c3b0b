"""Live accuracy bookkeeping (ROS-free): pair estimates with ground truth arriving on separate streams.

`evaluator_node` is a thin ROS shell around :class:`OnlineEvaluator`, so the matching logic — which estimate can be
scored now, which must wait for later GT, which can never be scored — is unit-tested without DDS.

Rules: an estimate at stamp ``s`` is scored once GT has a sample at or after ``s`` (so interpolation, not
extrapolation); if GT does not cover ``s`` (before its first sample or inside a gap longer than ``max_gap_ns``) it
is dropped as ``no_gt``; estimates still waiting when the run ends are scored against the GT received so far
(``finalize``) and the rest counted as ``unmatched_at_end``. Duplicate estimate stamps are counted, not scored
twice.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfapr_ros.bag.reader import Trajectory, build_trajectory
from mfapr_ros.core.drops import DropCounter

from .metrics import compute_metrics, metrics_from_errors, pose_errors
from .report import write_report


class OnlineEvaluator:
    """Collects estimates and GT; :meth:`match` scores what can be scored; :meth:`write` writes the report.

    ``gt_provider`` (optional) replaces the internal GT list, e.g. a TF chain recomputed from TF samples.
    """

    def __init__(self, max_gap_ns: int = 500_000_000,
                 gt_provider: Callable[[], Trajectory | None] | None = None) -> None:
        self.max_gap_ns = int(max_gap_ns)
        self._gt_provider = gt_provider
        self._gt_stamps: list[int] = []
        self._gt_t: list[np.ndarray] = []
        self._gt_q: list[np.ndarray] = []
        self._pending: list[tuple[int, np.ndarray, np.ndarray, float]] = []
        self._seen: set[int] = set()
        self.stamps: list[int] = []
        self.t_est: list[np.ndarray] = []
        self.q_est: list[np.ndarray] = []
        self.t_gt: list[np.ndarray] = []
        self.q_gt: list[np.ndarray] = []
        self.latency: list[float] = []
        self.t_err: list[float] = []
        self.r_err: list[float] = []
        self.drops = DropCounter()
        self.received = {"estimates": 0, "gt": 0, "retrieval": 0, "retrieval_shift": 0, "fused": 0}
        self._retrieval: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._retrieval_shift: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._covariance: dict[int, np.ndarray] = {}  # stamp → published 6x6 covariance (PoseWithCovariance)
        self._fused: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}  # stamp → ~/fused_pose

    def _drop(self, cause: str, n: int = 1) -> None:
        self.drops.add(cause, n=n)  # no detail: counted, not logged (the report and /diagnostics show them)

    def add_gt(self, stamp_ns: int, t: Any, q: Any) -> None:
        """One GT sample; out-of-order samples are inserted in place, duplicates of a stamp counted and ignored."""
        self.received["gt"] += 1
        s = int(stamp_ns)
        i = bisect.bisect_left(self._gt_stamps, s)
        if i < len(self._gt_stamps) and self._gt_stamps[i] == s:
            self._drop("gt_duplicate_stamp")
            return
        self._gt_stamps.insert(i, s)
        self._gt_t.insert(i, np.asarray(t, dtype=np.float64))
        self._gt_q.insert(i, np.asarray(q, dtype=np.float64))

    def add_estimate(self, stamp_ns: int, t: Any, q: Any, latency_s: float = float("nan"),
                     covariance: Any = None) -> None:
        """One estimate; ``covariance`` (6x6 or the 36 row-major values of ``PoseWithCovariance``) makes the
        report carry the calibration section (coverage of the published covariance) when every scored pose has one."""
        self.received["estimates"] += 1
        s = int(stamp_ns)
        if s in self._seen:
            self._drop("estimate_duplicate_stamp")
            return
        self._seen.add(s)
        t_arr, q_arr = np.asarray(t, dtype=np.float64), np.asarray(q, dtype=np.float64)
        if not (np.all(np.isfinite(t_arr)) and np.all(np.isfinite(q_arr)) and np.linalg.norm(q_arr) > 1e-6):
            self._drop("estimate_invalid")
            return
        self._pending.append((s, t_arr, q_arr, float(latency_s)))
        if covariance is not None:
            c = np.asarray(covariance, dtype=np.float64)
            if c.size == 36 and np.all(np.isfinite(c)):
                self._covariance[s] = c.reshape(6, 6)

    def add_retrieval(self, stamp_ns: int, t: Any, q: Any) -> None:
        """The image-retrieval baseline's pose for the bundle at ``stamp_ns`` (the node's ``~/retrieval_pose``);
        the report shows it beside the model for every scored stamp that has one."""
        self.received["retrieval"] += 1
        self._retrieval[int(stamp_ns)] = (np.asarray(t, dtype=np.float64), np.asarray(q, dtype=np.float64))

    def add_retrieval_shift(self, stamp_ns: int, t: Any, q: Any) -> None:
        """The shift-aware retrieval baseline's pose (the node's ``~/retrieval_shift_pose``, ring rigs): the best
        lookup over the query's cyclic slot shifts, reported beside plain retrieval for every scored stamp."""
        self.received["retrieval_shift"] += 1
        self._retrieval_shift[int(stamp_ns)] = (np.asarray(t, dtype=np.float64), np.asarray(q, dtype=np.float64))

    def add_fused(self, stamp_ns: int, t: Any, q: Any, covariance: Any = None) -> None:
        """The node's pose fused with odometry (``~/fused_pose``) for the bundle at ``stamp_ns``: the report's
        "fused" row beside the raw one, for every scored stamp that has one."""
        self.received["fused"] += 1
        c = None if covariance is None else np.asarray(covariance, dtype=np.float64)
        self._fused[int(stamp_ns)] = (np.asarray(t, dtype=np.float64), np.asarray(q, dtype=np.float64),
                                      c.reshape(6, 6) if c is not None and c.size == 36 else None)

    def fused_rows(self, stamps: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        """Fused ``(t, q, covariance or None)`` for ``stamps`` when every one has a fused pose, else None."""
        if not self._fused or not len(stamps) or any(int(s) not in self._fused for s in stamps):
            return None
        rows = [self._fused[int(s)] for s in stamps]
        covs = [r[2] for r in rows]
        return (np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]),
                np.stack(covs) if all(c is not None for c in covs) else None)

    def retrieval_rows(self, stamps: Sequence[int], shift: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        """Retrieval poses (``shift``: the shift-aware ones) for ``stamps`` when every one of them has one (a report
        row needs both), else None."""
        poses = self._retrieval_shift if shift else self._retrieval
        if not poses or not len(stamps) or any(int(s) not in poses for s in stamps):
            return None
        rows = [poses[int(s)] for s in stamps]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

    def gt_trajectory(self) -> Trajectory | None:
        if self._gt_provider is not None:
            return self._gt_provider()
        if not self._gt_stamps:
            return None
        return build_trajectory(self._gt_stamps, self._gt_t, self._gt_q, "online gt")

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def count(self) -> int:
        return len(self.stamps)

    def match(self, final: bool = False) -> int:
        """Score every pending estimate GT can answer for now (all of them when ``final``); returns how many."""
        if not self._pending:
            return 0
        gt = self.gt_trajectory()
        if gt is None or len(gt) == 0:
            if final:
                self._drop("unmatched_at_end", len(self._pending))
                self._pending = []
            return 0
        last = int(gt.stamps_ns[-1])
        ready = [p for p in self._pending if final or p[0] <= last]
        self._pending = [p for p in self._pending if not (final or p[0] <= last)]
        if not ready:
            return 0
        ready.sort(key=lambda p: p[0])
        s = np.array([p[0] for p in ready], dtype=np.int64)
        tg, qg, ok = gt.at(s, max_gap_ns=self.max_gap_ns)
        n_bad = int((~ok).sum())
        if n_bad:
            self._drop("unmatched_at_end" if final else "no_gt", n_bad)
        te = np.stack([p[1] for p in ready])[ok]
        qe = np.stack([p[2] for p in ready])[ok]
        if len(te):
            t_err, r_err = pose_errors(tg[ok], qg[ok], te, qe)
            self.stamps += s[ok].tolist()
            self.t_est += list(te)
            self.q_est += list(qe)
            self.t_gt += list(tg[ok])
            self.q_gt += list(qg[ok])
            self.latency += [p[3] for p, k in zip(ready, ok, strict=True) if k]
            self.t_err += t_err.tolist()
            self.r_err += r_err.tolist()
        return int(ok.sum())

    def summary(self) -> dict[str, Any]:
        """Running metrics of what is scored so far (what /diagnostics shows)."""
        m = metrics_from_errors(np.asarray(self.t_err), np.asarray(self.r_err))
        m["pending"] = self.pending
        m["drops"] = dict(self.drops)
        m["received"] = dict(self.received)
        return m

    def metrics(self) -> dict[str, Any]:
        if not self.stamps:
            return compute_metrics(np.zeros((0, 3)), np.zeros((0, 4)), np.zeros((0, 3)), np.zeros((0, 4)))
        return compute_metrics(np.asarray(self.t_gt), np.asarray(self.q_gt), np.asarray(self.t_est),
                               np.asarray(self.q_est), latency_s=np.asarray(self.latency))

    def write(self, out_dir: str | Path, meta: dict[str, Any] | None = None,
              baseline: tuple[Any, Any] | None = None, plots_enabled: bool = True,
              checkpoint_meta: dict[str, Any] | None = None, mapped_t: Any = None) -> dict[str, Path]:
        """Final match, then the shared report (rows sorted by stamp); ``checkpoint_meta`` adds the stored
        covariance calibration to the calibration section; ``mapped_t`` (the mapped positions) the drive's
        distance from the map."""
        self.match(final=True)
        order = np.argsort(np.asarray(self.stamps, dtype=np.int64), kind="stable")
        n = len(order)

        def arr(x: list[Any], w: int) -> np.ndarray:
            return np.asarray(x, dtype=np.float64).reshape(n, w)[order] if n else np.zeros((0, w))

        meta = dict(meta or {})
        meta.setdefault("drops", dict(self.drops))
        meta.setdefault("received", dict(self.received))
        lat = np.asarray(self.latency, dtype=np.float64)[order] if n else np.zeros(0)
        stamps = np.asarray(self.stamps, dtype=np.int64)[order] if n else np.zeros(0, dtype=np.int64)
        retrieval = self.retrieval_rows(stamps.tolist())
        if retrieval is None and self._retrieval:
            have = sum(int(s) in self._retrieval for s in stamps)
            meta.setdefault("retrieval_coverage", f"{have} of {n} scored poses have a retrieval pose; not reported")
        retrieval_shift = self.retrieval_rows(stamps.tolist(), shift=True)
        if retrieval_shift is None and self._retrieval_shift:
            have = sum(int(s) in self._retrieval_shift for s in stamps)
            meta.setdefault("retrieval_shift_coverage",
                            f"{have} of {n} scored poses have a shift-aware retrieval pose; not reported")
        fused = self.fused_rows(stamps.tolist())
        if fused is None and self._fused:
            have = sum(int(s) in self._fused for s in stamps)
            meta.setdefault("fused_coverage", f"{have} of {n} scored poses have a fused pose; not reported")
        fused_doc = None
        if fused is not None:
            from .report import fused_section

            fused_doc = fused_section(stamps, arr(self.t_gt, 3), arr(self.q_gt, 4), fused[0], fused[1], fused[2],
                                      source="the node's ~/fused_pose (fusion.enabled)")
        return write_report(out_dir, stamps_ns=stamps if n else [],
                            t_gt=arr(self.t_gt, 3), q_gt=arr(self.q_gt, 4), t_est=arr(self.t_est, 3),
                            q_est=arr(self.q_est, 4), baseline=baseline,
                            latency_s=lat if np.isfinite(lat).any() else None, meta=meta,
                            plots_enabled=plots_enabled, retrieval=retrieval, retrieval_shift=retrieval_shift,
                            calibration=self.calibration_section(stamps, checkpoint_meta), fused=fused_doc,
                            mapped_t=mapped_t)

    def calibration_section(self, stamps: Sequence[int], checkpoint_meta: dict[str, Any] | None = None
                            ) -> dict[str, Any] | None:
        """The report's ``calibration`` section when every scored pose came with a covariance, else ``None``."""
        if not len(stamps) or any(int(s) not in self._covariance for s in stamps):
            return None
        from mfapr_ros.inference.calibration import report_section

        order = np.argsort(np.asarray(self.stamps, dtype=np.int64), kind="stable")
        cov = np.stack([self._covariance[int(s)] for s in stamps])
        return report_section(np.asarray(self.t_gt)[order], np.asarray(self.q_gt)[order],
                              np.asarray(self.t_est)[order], np.asarray(self.q_est)[order], cov, checkpoint_meta)
