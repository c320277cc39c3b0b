"""`make demo` at CI scale: the same steps (synth → train → eval-bag → play + localize_node + evaluator_node over
loopback DDS) on a few dozen frames, so the demo cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_tiny_demo_end_to_end(tmp_path, ros_env):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "mfapr_ros.cli", "demo", "--scale", "tiny", "--out", str(out)],
                          env=ros_env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "train" / "best.json").exists() and (out / "train" / "best.safetensors").exists()
    offline = json.loads((out / "eval_bag" / "report.json").read_text())
    live = json.loads((out / "live" / "report.json").read_text())
    assert offline["metrics"]["count"] >= 30  # 40 query frames, a few lost to stamp jitter at the ends at most
    assert live["metrics"]["count"] >= 1, "no pose went through play → localize_node → evaluator_node"
    # the live node must keep up with a 10 Hz replay on 2 loaded cores (39 of 40 measured with two CPU hogs running;
    # the multi-threaded executor regression kept 6 %): latest-bundle-wins may skip a few, not most
    assert live["metrics"]["count"] >= 0.75 * offline["metrics"]["count"], (
        live["metrics"]["count"], offline["metrics"]["count"], (out / "logs" / "localize_node.log").read_text()[-1500:])
    for name in ("report.md", "error_cdf.png", "trajectory.png"):
        assert (out / "eval_bag" / name).exists()
    # three CPU epochs on 80 bundles must beat the mean training pose. Seeded, but CPUs differ in float summation
    # order, so this must hold for any seed: with the demo's 50-step warm-up 1 seed in 5 placed the query on the
    # other route (CI drew one); the tiny scale's 6-step warm-up passed 12 of 12 seeds (0.5-1.4 m against 19 m)
    model_med = offline["metrics"]["translation_m"]["median"]
    base_med = offline["baseline"]["metrics"]["translation_m"]["median"]
    assert model_med < base_med, (model_med, base_med)
    assert "live over DDS" in proc.stdout
    # the reversed query (split query_reverse) is evaluated offline and live as well, with the shift-aware
    # retrieval row (a ring rig) beside plain retrieval, and the summary names both queries
    offline_rev = json.loads((out / "eval_bag_reverse" / "report.json").read_text())
    live_rev = json.loads((out / "live_reverse" / "report.json").read_text())
    assert offline_rev["metrics"]["count"] >= 30
    assert live_rev["metrics"]["count"] >= 0.75 * offline_rev["metrics"]["count"]
    for doc in (offline_rev, live_rev):  # live: the node's ~/retrieval_shift_pose scored by evaluator_node
        assert doc["retrieval_shift"]["metrics"]["count"] == doc["metrics"]["count"]
    assert "Reverse query (driven the other way" in proc.stdout and "shift-aware retrieval" in proc.stdout
    # the demo model is rig-equivariant on the ring (the preset's fusion.symmetric: auto), and it says so
    assert "model.fusion.symmetric auto → on" in proc.stdout + proc.stderr
    assert json.loads((out / "train" / "best.json").read_text())["model"]["fusion"]["symmetric"] is True
    # both reports show the image-retrieval baseline: offline from the Localizer's prior, live from the node's
    # ~/retrieval_pose scored by evaluator_node
    assert (out / "train" / "best.retrieval.safetensors").exists()
    for doc in (offline, live):
        assert doc["retrieval"] is not None and doc["retrieval"]["metrics"]["count"] == doc["metrics"]["count"]
    assert "image-retrieval basel." in proc.stdout
    # every report says how far the query is from the map (the retrieval database's positions), live and offline
    for doc in (offline, live, offline_rev, live_rev):
        assert doc["map_distance"]["count"] == doc["metrics"]["count"]
        # no lookup answers nearer than the nearest mapped position: retrieval's errors are at or above the floor
        floor = doc["map_distance"]["translation_m"]
        ret = doc["retrieval"]["metrics"]["translation_m"]
        assert ret["median"] >= floor["median"] - 1e-9 and ret["mean"] >= floor["mean"] - 1e-9, (ret, floor)
    assert "distance from the map  :" in proc.stdout and "robot-frame error      :" in proc.stdout
    # both reports score the covariance the node publishes (live: ~/pose_with_covariance over DDS) with the
    # checkpoint's stored calibration, and the summary prints it
    assert "covariance_calibration" in json.loads((out / "train" / "best.json").read_text())
    for doc in (offline, live):
        cal = doc["calibration"]
        assert cal is not None and cal["stored"]["n"] >= 1
        assert cal["blocks"]["position_2d"]["count"] == doc["metrics"]["count"]
    assert "covariance position_2d" in proc.stdout
