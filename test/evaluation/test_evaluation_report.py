"""Evaluation metrics are exact on hand-made cases; the report folder is complete, parseable and has the baseline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mfapr_ros.core.errors import DataError
from mfapr_ros.core.geometry import quat_from_yaw
from mfapr_ros.evaluation import (
    FILES,
    baseline_metrics,
    compute_metrics,
    format_summary,
    load_report,
    mean_pose_baseline,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _hand_case():
    """Four poses with known errors: translations 0, 0.1, 1, 10 m; rotations 0, 1, 4, 20 degrees (about z)."""
    t_gt = np.zeros((4, 3))
    q_gt = np.tile([1.0, 0, 0, 0], (4, 1))
    t_est = np.array([[0, 0, 0], [0.1, 0, 0], [0, 1.0, 0], [0, 0, 10.0]])
    q_est = quat_from_yaw(np.radians([0.0, 1.0, 4.0, 20.0]))
    return t_gt, q_gt, t_est, q_est


def test_metrics_exact_on_hand_case():
    m = compute_metrics(*_hand_case())
    assert m["count"] == 4
    t, r = m["translation_m"], m["rotation_deg"]
    assert t["mean"] == pytest.approx((0 + 0.1 + 1 + 10) / 4)
    assert t["median"] == pytest.approx(0.55)
    assert t["max"] == pytest.approx(10.0)
    # numpy linear percentiles of [0, 0.1, 1, 10]: p75 at rank 2.25 → 1 + 0.25·9 = 3.25
    assert t["p75"] == pytest.approx(3.25)
    assert t["p90"] == pytest.approx(1 + 0.7 * 9)
    assert r["mean"] == pytest.approx(25 / 4, abs=1e-9)
    assert r["median"] == pytest.approx(2.5, abs=1e-9)
    # bins (0.25 m, 2°), (0.5 m, 5°), (5 m, 10°): pose0 and pose1 in all; pose2 (1 m, 4°) only in the 5 m bin
    assert m["recall"] == {"0.25m_2deg": 0.5, "0.5m_5deg": 0.5, "5m_10deg": 0.75}
    assert m["bins"] == [[0.25, 2.0], [0.5, 5.0], [5.0, 10.0]]


def test_quaternion_sign_does_not_matter():
    t_gt, q_gt, t_est, q_est = _hand_case()
    a = compute_metrics(t_gt, q_gt, t_est, q_est)
    b = compute_metrics(t_gt, -q_gt, t_est, -q_est)
    assert a["rotation_deg"]["mean"] == pytest.approx(b["rotation_deg"]["mean"])


def test_per_track_and_latency():
    t_gt, q_gt, t_est, q_est = _hand_case()
    m = compute_metrics(t_gt, q_gt, t_est, q_est, tracks=["a", "a", "b", "b"],
                        latency_s=[0.01, 0.02, float("nan"), 0.04])
    assert m["per_track"]["a"]["count"] == 2
    assert m["per_track"]["a"]["translation_m"]["mean"] == pytest.approx(0.05)
    assert m["per_track"]["b"]["translation_m"]["median"] == pytest.approx(5.5)
    assert m["per_track"]["b"]["recall"]["5m_10deg"] == 0.5
    lat = m["latency_s"]
    assert lat["count"] == 3 and lat["missing"] == 1
    assert lat["p50"] == pytest.approx(0.02)
    assert lat["p99"] == pytest.approx(0.02 + 0.98 * 0.02)


def test_empty_and_bad_inputs():
    m = compute_metrics(np.zeros((0, 3)), np.zeros((0, 4)), np.zeros((0, 3)), np.zeros((0, 4)))
    assert m["count"] == 0 and m["translation_m"]["median"] is None and m["recall"]["5m_10deg"] == 0.0
    with pytest.raises(DataError, match="paired"):
        compute_metrics(np.zeros((2, 3)), np.tile([1.0, 0, 0, 0], (2, 1)), np.zeros((1, 3)), [[1.0, 0, 0, 0]])
    with pytest.raises(DataError, match=r"\(N, 4\)"):
        compute_metrics(np.zeros((1, 3)), [[1.0, 0, 0]], np.zeros((1, 3)), [[1.0, 0, 0, 0]])
    with pytest.raises(DataError, match="NaN"):
        compute_metrics([[np.nan, 0, 0]], [[1.0, 0, 0, 0]], np.zeros((1, 3)), [[1.0, 0, 0, 0]])
    with pytest.raises(DataError, match="one label per pose"):
        compute_metrics(*_hand_case(), tracks=["a"])


def test_mean_pose_baseline():
    t_train = np.array([[0.0, 0, 0], [2.0, 0, 0], [4.0, 3.0, 0]])
    q_train = quat_from_yaw(np.radians([-10.0, 0.0, 10.0]))
    t_b, q_b = mean_pose_baseline(t_train, q_train)
    np.testing.assert_allclose(t_b, [2.0, 1.0, 0.0])
    np.testing.assert_allclose(np.abs(q_b), [1.0, 0, 0, 0], atol=1e-12)
    gt_t = np.array([[2.0, 1.0, 0.0], [5.0, 5.0, 0.0]])
    gt_q = quat_from_yaw(np.radians([0.0, 30.0]))
    m = baseline_metrics(t_train, q_train, gt_t, gt_q)
    assert m["translation_m"]["mean"] == pytest.approx(2.5)
    assert m["rotation_deg"]["max"] == pytest.approx(30.0)


def test_write_report_files(tmp_path):
    rng = np.random.default_rng(0)
    n = 40
    stamps = (np.arange(n) * 100_000_000 + 1_700_000_000_000_000_000).astype(np.int64)
    t_gt = np.stack([np.cos(np.arange(n) / 6), np.sin(np.arange(n) / 6), np.zeros(n)], 1) * 5
    q_gt = quat_from_yaw(np.arange(n) / 6)
    t_est = t_gt + rng.normal(0, 0.2, (n, 3))
    q_est = quat_from_yaw(np.arange(n) / 6 + np.radians(rng.normal(0, 2, n)))
    masks = np.ones((n, 4), bool)
    masks[10:20, 2] = False
    paths = write_report(tmp_path / "rep", stamps_ns=stamps, t_gt=t_gt, q_gt=q_gt, t_est=t_est, q_est=q_est,
                         baseline=(t_gt, q_gt), masks=masks, tracks=["q"] * n, latency_s=np.full(n, 0.01),
                         meta={"source": "unit-test", "cameras": ["c0", "c1", "c2", "c3"], "drops": {"no_gt": 3}})
    assert set(paths) == set(FILES)
    for kind, p in paths.items():
        assert p.exists() and p.name == FILES[kind]
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 2000
    assert not list((tmp_path / "rep").glob("*.tmp"))
    doc = json.loads(paths["json"].read_text())
    assert doc == load_report(tmp_path / "rep")
    direct = compute_metrics(t_gt, q_gt, t_est, q_est)
    assert doc["metrics"]["translation_m"]["median"] == pytest.approx(direct["translation_m"]["median"])
    assert doc["metrics"]["recall"] == direct["recall"]
    assert doc["metrics"]["camera_presence"]["c2"] == pytest.approx(0.75)
    assert doc["metrics"]["latency_s"]["p50"] == pytest.approx(0.01)
    # the baseline is the mean of the GT circle: centre ≈ origin, so its error ≈ the radius (5 m)
    assert doc["baseline"]["metrics"]["translation_m"]["median"] == pytest.approx(5.0, abs=0.6)
    assert doc["baseline"]["metrics"]["count"] == n
    assert len(doc["rows"]) == n and doc["rows"][12]["mask"] == [1, 1, 0, 1]
    assert doc["rows"][0]["stamp_ns"] == int(stamps[0])
    assert doc["meta"]["drops"] == {"no_gt": 3}
    md = paths["markdown"].read_text()
    assert "| **model** |" in md and "| mean-pose baseline |" in md and "≤0.25 m, 2°" in md
    assert "no_gt 3" in md and "c2 75.0 %" in md
    summary = format_summary(doc)
    assert f"poses: {n}" in summary and "baseline" in summary


def test_write_report_single_baseline_pose_and_nan_latency(tmp_path):
    t_gt, q_gt, t_est, q_est = _hand_case()
    paths = write_report(tmp_path, stamps_ns=[1, 2, 3, 4], t_gt=t_gt, q_gt=q_gt, t_est=t_est, q_est=q_est,
                         baseline=(np.zeros(3), np.array([1.0, 0, 0, 0])), latency_s=[0.1, np.nan, 0.1, 0.1],
                         meta={}, plots_enabled=False)
    assert set(paths) == {"json", "markdown"}
    doc = json.loads(paths["json"].read_text())  # strict JSON: NaN became null
    assert doc["rows"][1]["latency_s"] is None
    assert doc["baseline"]["metrics"]["translation_m"]["max"] == 0.0
    assert math.isclose(doc["metrics"]["translation_m"]["max"], 10.0)


def test_write_report_rejects_mismatched_lengths(tmp_path):
    t_gt, q_gt, t_est, q_est = _hand_case()
    with pytest.raises(DataError, match="stamps"):
        write_report(tmp_path, stamps_ns=[1, 2], t_gt=t_gt, q_gt=q_gt, t_est=t_est, q_est=q_est, meta={})
    with pytest.raises(DataError, match="masks"):
        write_report(tmp_path, stamps_ns=[1, 2, 3, 4], t_gt=t_gt, q_gt=q_gt, t_est=t_est, q_est=q_est,
                     masks=np.ones((3, 2), bool), meta={})
    with pytest.raises(DataError, match="load_report|no evaluation report"):
        load_report(tmp_path / "nothing")


def test_write_report_renders_calibration_section(tmp_path):
    """Errors drawn from the published covariance (σ = 0.5 m, 2°): the section lands in JSON, Markdown and the
    console summary with coverage near the χ² targets; without a section the report says nothing about it."""
    from mfapr_ros.inference.calibration import report_section

    rng = np.random.default_rng(3)
    n = 4000
    t_gt = np.zeros((n, 3))
    q_gt = np.tile([1.0, 0, 0, 0], (n, 1))
    t_est = rng.normal(0, 0.5, (n, 3))
    q_est = quat_from_yaw(np.radians(rng.normal(0, 2.0, n)))
    cov = np.zeros((n, 6, 6))
    cov[:, :3, :3] = np.eye(3) * 0.25
    cov[:, 3:, 3:] = np.eye(3) * np.radians(2.0) ** 2
    sec = report_section(t_gt, q_gt, t_est, q_est, cov, {"covariance_calibration": {
        "position_scale": 1.5, "rotation_scale": 0.8, "fitted_on": "validation", "n": 250}})
    paths = write_report(tmp_path / "rep", stamps_ns=np.arange(n), t_gt=t_gt, q_gt=q_gt, t_est=t_est, q_est=q_est,
                         meta={}, plots_enabled=False, calibration=sec)
    doc = load_report(tmp_path / "rep")
    blocks = doc["calibration"]["blocks"]
    for name, k in (("position_2d", "2sigma"), ("position_3d", "1sigma"), ("yaw", "3sigma")):
        assert abs(blocks[name]["coverage"][k] - blocks[name]["target"][k]) < 3.0, (name, k, blocks[name])
    assert doc["calibration"]["stored"]["position_scale"] == 1.5
    md = paths["markdown"].read_text()
    assert "### Covariance calibration" in md and "| position_2d |" in md and "×1.5" in md
    assert "covariance coverage 1σ/2σ/3σ" in format_summary(doc)
    write_report(tmp_path / "none", stamps_ns=np.arange(n), t_gt=t_gt, q_gt=q_gt, t_est=t_est, q_est=q_est,
                 meta={}, plots_enabled=False)
    plain = load_report(tmp_path / "none")
    assert plain["calibration"] is None
    assert "Covariance calibration" not in (tmp_path / "none" / "report.md").read_text()
    assert "covariance coverage" not in format_summary(plain)


def test_online_evaluator_reports_the_fused_row_for_every_scored_stamp(tmp_path):
    """``~/fused_pose`` messages beside the raw ones: the report's fused section scores them (metrics, coverage,
    worst error after 2 s); a fused pose missing for a scored stamp drops the row with a note instead of a
    partial figure."""
    from mfapr_ros.evaluation import load_report
    from mfapr_ros.evaluation.online import OnlineEvaluator

    def run(skip_fused: int | None):
        ev = OnlineEvaluator()
        q = np.array([1.0, 0, 0, 0])
        for k in range(40):
            s = 1_000_000_000 + k * 100_000_000
            ev.add_gt(s, [0.1 * k, 0, 0], q)
            ev.add_estimate(s, [0.1 * k + 0.3, 0, 0], q, covariance=np.eye(6) * 0.09)
            if k != skip_fused:
                ev.add_fused(s, [0.1 * k + (1.5 if k == 5 else 0.05), 0, 0], q, np.eye(6) * 0.01)
        ev.add_gt(1_000_000_000 + 40 * 100_000_000, [4.0, 0, 0], q)
        return load_report(ev.write(tmp_path / f"r{skip_fused}", plots_enabled=False)["json"])

    doc = run(None)
    fz = doc["fused"]
    assert fz["metrics"]["count"] == 40 and fz["metrics"]["translation_m"]["median"] == pytest.approx(0.05)
    assert doc["metrics"]["translation_m"]["median"] == pytest.approx(0.3)
    # the 1.5 m error is at 0.5 s: inside the first 2 s, so not in the after-warm-up figure
    assert fz["after_warmup"]["max_translation_m"] == pytest.approx(0.05) and fz["after_warmup"]["over_1m"] == 0
    assert fz["calibration"]["blocks"]["position_2d"]["count"] == 40
    assert doc["meta"]["received"]["fused"] == 40
    missing = run(7)
    assert missing["fused"] is None and "39 of 40" in missing["meta"]["fused_coverage"]
def test_retrieval_baseline_source_is_a_real_module():
    """Reports name the module that implements the retrieval baseline; it must exist (it once said
    evaluation/retrieval.py, which never did)."""
    from pathlib import Path

    from mfapr_ros.evaluation.report import RETRIEVAL_SOURCE

    root = Path(__file__).resolve().parents[2]
    assert RETRIEVAL_SOURCE == "mfapr_ros/inference/baselines.py" and (root / RETRIEVAL_SOURCE).is_file()
    for path in [*root.joinpath("mfapr_ros").rglob("*.py"), *root.joinpath("docs").glob("*.md"), root / "README.md"]:
        assert "evaluation/retrieval.py" not in path.read_text(), path


def test_map_distance_is_the_floor_of_a_lookup_on_a_lane_beside_the_map(tmp_path):
    """Mapping drove y = 0 every 0.1 m; the query drives 0.2 m beside it (y = 0.2) and at one end runs 1 m past the
    mapped stretch. The nearest mapped position is 0.2 m away on the lane (exactly) and up to √(1² + 0.2²) past the
    end; a lookup that answers with the nearest mapped pose has exactly these errors, so none can do better."""
    from mfapr_ros.evaluation.metrics import map_distance, nearest_distance

    mapped = np.stack([np.arange(0, 10.0001, 0.1), np.zeros(101), np.zeros(101)], 1)
    x = np.arange(0.05, 11.0, 0.1)
    t_gt = np.stack([x, np.full(len(x), 0.2), np.zeros(len(x))], 1)
    d = nearest_distance(t_gt, mapped, chunk=7)  # chunks smaller than the query: the same answer
    on_lane = x <= 10.0
    assert d[on_lane] == pytest.approx(np.hypot(0.05, 0.2), abs=1e-9)
    assert d[~on_lane] == pytest.approx(np.hypot(x[~on_lane] - 10.0, 0.2), abs=1e-9)
    md = map_distance(t_gt, mapped)
    assert md["count"] == len(x)
    assert md["translation_m"]["median"] == pytest.approx(np.hypot(0.05, 0.2))
    assert md["within_m"]["0.25"] == pytest.approx(np.mean(d <= 0.25)) and md["within_m"]["0.1"] == 0.0
    # the oracle lookup (nearest mapped pose) has exactly these errors
    j = np.argmin(np.linalg.norm(t_gt[:, None] - mapped[None], axis=2), axis=1)
    q = np.tile([1.0, 0, 0, 0], (len(x), 1))
    assert compute_metrics(t_gt, q, mapped[j], q)["translation_m"]["median"] == pytest.approx(
        md["translation_m"]["median"])
    with pytest.raises(DataError, match="no mapped positions"):
        nearest_distance(t_gt, np.zeros((0, 3)))
    with pytest.raises(DataError, match="NaN"):
        nearest_distance(np.full((1, 3), np.nan), mapped)
    stamps = np.arange(len(x), dtype=np.int64) + 1
    paths = write_report(tmp_path / "rep", stamps_ns=stamps, t_gt=t_gt, q_gt=q, t_est=t_gt, q_est=q,
                         plots_enabled=False, mapped_t=mapped)
    doc = load_report(paths["json"])
    assert doc["map_distance"]["translation_m"]["median"] == pytest.approx(np.hypot(0.05, 0.2))
    assert "Distance from the map" in paths["markdown"].read_text()
    assert "distance from the map" in format_summary(doc)
    bare = load_report(write_report(tmp_path / "bare", stamps_ns=stamps, t_gt=t_gt, q_gt=q, t_est=t_gt, q_est=q,
                                    plots_enabled=False)["json"])
    assert bare["map_distance"] is None and "distance from the map" not in format_summary(bare)


def test_robot_frame_errors_split_a_side_offset_from_along_track_noise():
    """A robot heading +y (yaw 90°) whose estimates sit 0.2 m to its right (world +x) and ±0.1 m along its track:
    in its own frame that is left −0.2 m every time (a bias: signed median = −size) and forward ±0.1 m (noise:
    signed median 0); the world-frame error would mix them by heading."""
    from mfapr_ros.evaluation.metrics import robot_frame_errors

    n = 40
    t_gt = np.stack([np.zeros(n), np.arange(n) * 0.1, np.zeros(n)], 1)
    q_gt = quat_from_yaw(np.full(n, np.pi / 2))
    along = np.where(np.arange(n) % 2 == 0, 0.1, -0.1)
    t_est = t_gt + np.stack([np.full(n, 0.2), along, np.zeros(n)], 1)
    rf = robot_frame_errors(t_gt, q_gt, t_est)
    assert rf["left"]["median_abs"] == pytest.approx(0.2) and rf["left"]["median_signed"] == pytest.approx(-0.2)
    assert rf["forward"]["median_abs"] == pytest.approx(0.1) and rf["forward"]["median_signed"] == pytest.approx(0.0)
    assert rf["up"]["p90_abs"] == pytest.approx(0.0, abs=1e-12)
    assert compute_metrics(t_gt, q_gt, t_est, q_gt)["robot_frame_m"] == rf
    assert robot_frame_errors(np.zeros((0, 3)), np.zeros((0, 4)), np.zeros((0, 3)))["left"]["median_abs"] is None
