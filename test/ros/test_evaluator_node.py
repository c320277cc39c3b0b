"""evaluator_node: matching rules (ROS-free OnlineEvaluator) and the real node over loopback DDS."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mfapr_ros.core.geometry import quat_from_yaw
from mfapr_ros.evaluation import compute_metrics
from mfapr_ros.evaluation.online import OnlineEvaluator

NS = 1_000_000_000
T0 = 1_700_000_000 * NS


def _gt(s_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = (s_ns - T0) / NS
    return np.stack([x, 2 * x, np.zeros_like(x)], 1), quat_from_yaw(0.1 * x)


def test_online_matching_rules(tmp_path):
    ev = OnlineEvaluator(max_gap_ns=NS // 2)
    gs = T0 + np.arange(0, 11) * NS // 10  # GT at 10 Hz over 1 s
    gt, gq = _gt(gs)
    est_s = T0 + np.array([-NS // 10, 5 * NS // 100, 25 * NS // 100, 55 * NS // 100, 2 * NS])
    et, eq = _gt(est_s)
    et = et + [0.3, 0.0, 0.0]
    for s, t, q in zip(est_s, et, eq, strict=True):
        ev.add_estimate(int(s), t, q)
    ev.add_estimate(int(est_s[1]), et[1], eq[1])  # duplicate stamp
    ev.add_estimate(T0 + 7, [np.nan, 0, 0], [1, 0, 0, 0])  # invalid
    assert ev.match() == 0  # no GT yet: nothing can be scored, nothing is lost
    for s, t, q in zip(gs[:6], gt[:6], gq[:6], strict=True):
        ev.add_gt(int(s), t, q)
    ev.add_gt(int(gs[2]), gt[2], gq[2])  # duplicate GT
    # GT reaches 0.5 s: the estimates at 0.05 and 0.25 s are scored, -0.1 s is outside GT (dropped),
    # 0.55 s and 2 s wait for more GT
    assert ev.match() == 2
    assert ev.drops == {"estimate_duplicate_stamp": 1, "estimate_invalid": 1, "gt_duplicate_stamp": 1, "no_gt": 1}
    assert ev.pending == 2
    for s, t, q in zip(gs[6:], gt[6:], gq[6:], strict=True):
        ev.add_gt(int(s), t, q)
    assert ev.match() == 1 and ev.pending == 1
    np.testing.assert_allclose(ev.t_err, [0.3, 0.3, 0.3], atol=1e-9)  # interpolated GT is exact on a line
    np.testing.assert_allclose(ev.r_err, 0.0, atol=1e-6)
    s = ev.summary()
    assert s["count"] == 3 and s["translation_m"]["median"] == pytest.approx(0.3)
    paths = ev.write(tmp_path, meta={"source": "unit"}, baseline=(np.zeros(3), np.array([1.0, 0, 0, 0])),
                     plots_enabled=False)
    doc = json.loads(paths["json"].read_text())
    assert doc["metrics"]["count"] == 3 and doc["meta"]["drops"]["unmatched_at_end"] == 1
    assert [r["stamp_ns"] for r in doc["rows"]] == sorted(int(x) for x in est_s[1:4])


def test_online_out_of_order_gt_and_tf_provider():
    ev = OnlineEvaluator()
    gs = T0 + np.arange(5) * NS // 10
    gt, gq = _gt(gs)
    for i in (3, 0, 4, 1, 2):
        ev.add_gt(int(gs[i]), gt[i], gq[i])
    ev.add_estimate(int(gs[2] + 1000), gt[2], gq[2])
    assert ev.match() == 1 and ev.t_err[0] < 1e-5




def _publisher_node(ctx):
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry

    node = rclpy.create_node("evaluator_test_source", context=ctx)
    pub_est = node.create_publisher(PoseStamped, "/mfapr_localizer/pose", 100)
    pub_gt = node.create_publisher(Odometry, "/ground_truth/odom", 100)
    return node, pub_est, pub_gt


def _fill(msg, stamp, t, q, pose):
    from mfapr_ros.ros.convert import ns_to_time, pose_to_msg

    msg.header.stamp = ns_to_time(stamp)
    msg.header.frame_id = "map"
    p = pose_to_msg(t, q)
    pose.position, pose.orientation = p.position, p.orientation
    return msg


def _wait_matched(pub, n, timeout=20.0):
    deadline = time.monotonic() + timeout
    while pub.get_subscription_count() < n and time.monotonic() < deadline:
        time.sleep(0.05)
    return pub.get_subscription_count() >= n


@pytest.mark.ros
def test_evaluator_node_over_dds(tmp_path, ros_env, rclpy_context):
    """Odometry GT (type found in the graph) + PoseStamped estimates → report with exact errors, /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor

    node, pub_est, pub_gt = _publisher_node(rclpy_context)
    diags: list = []
    node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    out = tmp_path / "rep"
    n_est = 12
    proc = subprocess.Popen([sys.executable, "-m", "mfapr_ros.ros.evaluator_node", "--out", str(out),
                             "--expected-count", str(n_est), "--duration", "60", "--ros-args", "-p",
                             "gt_topic:=/ground_truth/odom", "-p", "diagnostics_period:=0.2"],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        gs = T0 + np.arange(0, 30) * NS // 20  # 20 Hz GT over 1.5 s
        gt, gq = _gt(gs)
        es = T0 + 3 * NS // 100 + np.arange(n_est) * NS // 10  # 10 Hz estimates between GT samples
        et, eq = _gt(es)
        rng = np.random.default_rng(1)
        et = et + rng.normal(0, 0.2, et.shape)
        eq = quat_from_yaw(0.1 * (es - T0) / NS + np.radians(rng.normal(0, 3, n_est)))
        # GT publisher first so 'auto' type discovery finds the topic; then wait for both subscriptions
        pub_gt.publish(Odometry())  # a zero-stamp sample the evaluator must tolerate (it is far in the past)
        assert _wait_matched(pub_gt, 1) and _wait_matched(pub_est, 1), "evaluator did not subscribe"
        for s, t, q in zip(gs, gt, gq, strict=True):
            m = Odometry()
            pub_gt.publish(_fill(m, int(s), t, q, m.pose.pose))
        for s, t, q in zip(es, et, eq, strict=True):
            m = PoseStamped()
            pub_est.publish(_fill(m, int(s), t, q, m.pose))
            ex.spin_once(timeout_sec=0.02)
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.05)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        ex.shutdown()
        node.destroy_node()
    assert proc.returncode == 0, stderr
    doc = json.loads((out / "report.json").read_text())
    assert doc["meta"]["finish_reason"] == f"expected_count {n_est} reached"
    assert doc["meta"]["subscribed"]["/ground_truth/odom"] == "nav_msgs/msg/Odometry"
    tg, qg = _gt(es)
    direct = compute_metrics(tg, qg, et, eq)
    m = doc["metrics"]
    assert m["count"] == n_est
    assert m["translation_m"]["median"] == pytest.approx(direct["translation_m"]["median"], abs=1e-6)
    assert m["rotation_deg"]["mean"] == pytest.approx(direct["rotation_deg"]["mean"], abs=1e-4)
    assert m["recall"] == direct["recall"]
    assert doc["baseline"] is not None and doc["meta"]["baseline_source"].startswith("mean of the ground truth")
    assert (out / "error_cdf.png").exists() and (out / "report.md").exists()
    assert "poses: 12" in stdout
    evals = [s for d in diags for s in d.status if "pose accuracy" in s.name]
    assert evals, "no /diagnostics from evaluator_node"
    keys = {kv.key for kv in evals[-1].values}
    assert {"count", "translation_median_m", "rotation_mean_deg", "recall_0.25m_2deg"} <= keys


@pytest.mark.ros
def test_evaluator_node_sigint_writes_report(tmp_path, ros_env):
    out = tmp_path / "rep"
    proc = subprocess.Popen([sys.executable, "-m", "mfapr_ros.ros.evaluator_node", "--out", str(out), "--ros-args",
                             "-p", "gt_type:=pose", "-p", "pose_type:=pose"],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 1, stderr  # nothing scored: the report is written, and the exit says it failed
    assert "no pose was scored" in stderr
    doc = json.loads((out / "report.json").read_text())
    assert doc["metrics"]["count"] == 0 and doc["meta"]["finish_reason"] == "SIGINT received"


@pytest.mark.ros
def test_evaluator_node_refuses_bad_parameters(tmp_path, ros_env):
    r = subprocess.run([sys.executable, "-m", "mfapr_ros.ros.evaluator_node", "--ros-args", "-p", "gt_type:=lidar"],
                       env=ros_env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "gt_type" in r.stderr and "refusing to start" in r.stderr


def test_evaluator_node_checks_the_baseline_checkpoint_at_start(tmp_path, rclpy_context):
    """A checkpoint that cannot give the baseline refuses the start (before any pose is scored), never at the end
    where the whole run's report would be lost."""
    from mfapr_ros.core.errors import ConfigError
    from mfapr_ros.ros.evaluator_node import EvaluatorNode

    with pytest.raises(ConfigError, match="missing.json"):
        EvaluatorNode("ev_bad_ck", overrides={"checkpoint": str(tmp_path / "missing.json")}, context=rclpy_context)
    no_prov = tmp_path / "np.json"
    no_prov.write_text(json.dumps({"format": "x"}))
    with pytest.raises(ConfigError, match="provenance.mean_pose"):
        EvaluatorNode("ev_bad_ck2", overrides={"checkpoint": str(no_prov), "baseline": "checkpoint"},
                      context=rclpy_context)
    with pytest.raises(ConfigError, match="needs the parameter 'checkpoint'"):
        EvaluatorNode("ev_bad_ck3", overrides={"baseline": "checkpoint"}, context=rclpy_context)
    node = EvaluatorNode("ev_auto", overrides={"checkpoint": str(no_prov)}, context=rclpy_context)  # auto: GT mean
    try:
        assert node.baseline() == (None, "none")  # no GT received yet
    finally:
        node.destroy_node()


def test_tf_chain_with_only_invalid_samples_is_no_ground_truth_yet():
    """A static edge whose only sample has a zero quaternion gives no trajectory (None), not an IndexError inside the
    evaluator's timer (which used to kill the node before it wrote its report)."""
    from mfapr_ros.bag.reader import tf_trajectory

    good = [(k * 100, np.array([k * 0.1, 0.0, 0.0]), np.array([1.0, 0.0, 0.0, 0.0])) for k in range(5)]
    edges = {("map", "odom"): [(0, np.zeros(3), np.zeros(4))], ("odom", "base_link"): good}
    assert tf_trajectory(edges, {("map", "odom")}, "map", "base_link") is None
    edges[("map", "odom")].append((0, np.zeros(3), np.array([1.0, 0.0, 0.0, 0.0])))
    traj = tf_trajectory(edges, {("map", "odom")}, "map", "base_link")
    assert traj is not None and len(traj) == 5


@pytest.mark.ros
@pytest.mark.slow
def test_play_node_evaluator_pipeline(tmp_path, ros_env):
    """`mfapr play` → localize_node (use_sim_time) → evaluator_node over DDS: the live report's poses equal the
    offline `eval-bag` poses at the same bundle stamps (same sync, same Localizer)."""
    pytest.importorskip("mfapr_ros.inference.localizer")
    import torch

    from mfapr_ros.bag.synth import SynthBagSpec, write_synth_bag
    from mfapr_ros.core.checkpoint import save_checkpoint
    from mfapr_ros.core.preprocess import PreprocessConfig
    from mfapr_ros.core.rig import ring_rig
    from mfapr_ros.evaluation.eval_bag import evaluate_bag
    from mfapr_ros.models import build_model, model_meta, preset

    rig = ring_rig(4)
    torch.manual_seed(0)
    model = build_model(preset("tiny", image_size=32))
    ck = save_checkpoint(tmp_path / "tiny", model, model_meta(model, rig, PreprocessConfig(resize=32, crop=32)))
    bag = tmp_path / "bag"
    write_synth_bag(bag, SynthBagSpec([c.topic for c in rig.cameras], frames=30, size=32, storage="mcap"))
    out = tmp_path / "live"
    py = sys.executable
    evaluator = subprocess.Popen([py, "-m", "mfapr_ros.ros.evaluator_node", "--out", str(out), "--checkpoint", str(ck),
                                  "--pose-topic", "/mfapr_localizer/pose_with_covariance", "--ros-args", "-p",
                                  "gt_type:=pose", "-p", "pose_type:=pose_cov", "-p", "use_sim_time:=true"],
                                 env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # reliable images end to end (player --image-qos reliable + the node's standard qos_overrides), and half speed:
    # the comparison below must not depend on best-effort losses or on CPU contention on a loaded 2-core CI box
    qos = [a for c in rig.cameras for a in ("-p", f"qos_overrides.{c.topic}.subscription.reliability:=reliable")]
    node = subprocess.Popen([py, "-m", "mfapr_ros.ros.localize_node", "--ros-args", "-p", f"checkpoint:={ck}", "-p",
                             "device:=cpu", "-p", "use_sim_time:=true", *qos],
                            env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    procs = [evaluator, node]
    try:
        player = subprocess.run([py, "-m", "mfapr_ros.cli", "play", str(bag), "--clock", "--wait-subscribers", "1",
                                 "--wait-timeout", "60", "--delay", "1.0", "--rate", "0.5", "--image-qos", "reliable"],
                                env=ros_env, capture_output=True, text=True, timeout=120)
        assert player.returncode == 0, player.stderr
        time.sleep(2.0)  # let the last inferences and poses arrive
        for p in procs:
            p.send_signal(signal.SIGINT)
        ev_out, ev_err = evaluator.communicate(timeout=30)
        _, node_err = node.communicate(timeout=30)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert evaluator.returncode == 0, ev_err
    doc = json.loads((out / "report.json").read_text())
    live = {r["stamp_ns"]: r for r in doc["rows"]}
    assert len(live) >= 8, (doc["meta"]["drops"], node_err[-2000:])  # latest-bundle-wins skips some on a loaded box
    offline = evaluate_bag(ck, bag, progress=False, batch=8)
    off = dict(zip(offline.stamps_ns.tolist(), offline.t_est, strict=True))
    common = sorted(set(live) & set(off))
    assert len(common) == len(live), "live bundle stamps differ from the offline synchronizer's"
    np.testing.assert_allclose([live[s]["t_est"] for s in common], [off[s] for s in common], atol=1e-4)
    assert doc["metrics"]["count"] == len(live) and (out / "trajectory.png").exists()
    assert "poses:" in ev_out
    # the covariance that crossed DDS is the offline Localizer's: same calibration figures on the same rows
    from mfapr_ros.inference.calibration import report_section

    rows = [live[s] for s in common]
    cov = dict(zip(offline.stamps_ns.tolist(), offline.covariances, strict=True))
    want = report_section(*(np.array([r[k] for r in rows]) for k in ("t_gt", "q_gt_wxyz", "t_est", "q_est_wxyz")),
                          np.array([cov[s] for s in common]))
    got = doc["calibration"]["blocks"]
    for name, block in want["blocks"].items():
        assert got[name]["count"] == len(common)
        assert got[name]["nll"] == pytest.approx(block["nll"], abs=1e-3), name
    assert "Covariance calibration" in (out / "report.md").read_text()
