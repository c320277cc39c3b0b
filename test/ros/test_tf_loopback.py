"""TF for real over loopback DDS on the pip route: `mfapr play` publishes a bag's /tf and /tf_static, and the
localize node broadcasts map→base_link or the REP-105 map→odom through the tf2_msgs fallback of ros/tf_output.py
(tf2_ros first when installed).

Why these checks: numbers, not just message counts. (a) what the player publishes is the bag's trajectory and its
latched static transform; (b) the map→base_link TF equals ``~/pose`` at the same stamp; (c) map→odom composed with
the ground-truth odom→base_link at the bundle stamp gives back ``~/pose`` — the REP-105 identity, which only holds
if the node's own /tf listener interpolated the played odometry at the right stamp.
Skipped only when tf2_msgs is not importable (`make install` could not build it on this machine).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy")
pytest.importorskip("mfapr_ros.inference.localizer")
pytest.importorskip("tf2_msgs.msg", reason="tf2_msgs is not importable (make install could not build it here): "
                                           "no TF on the pip route, nothing to test over DDS")

from helpers import IMG, make_checkpoint, spin, wait, wait_stable  # noqa: E402

from mfapr_ros.bag.synth import SynthBagSpec, write_synth_bag  # noqa: E402
from mfapr_ros.core.geometry import interpolate_poses, pose_compose, quat_conj, quat_mul  # noqa: E402

N_CAM = 4
CAMS = [f"/cam{i}/image_raw" for i in range(N_CAM)]
ODOM_SHIFT = np.array([1.0, 0.0, 0.0])  # synth.py's static map→odom (odom→base_link = map→base_link − this)
TOLERANCE_NS = 100_000_000  # transform_tolerance 0.1 s: map→odom is future-dated by this


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """8 bundles of 4 × 32 px cameras at 10 Hz, TF ground truth at 100 Hz (odom→base_link) + static map→odom."""
    path = tmp_path_factory.mktemp("tfbag") / "bag"
    truth = write_synth_bag(path, SynthBagSpec(CAMS, frames=8, hz=10.0, size=IMG, gt="tf", gt_hz=100.0,
                                               extra_topics=False))
    return path, truth


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("tfckpt"), N_CAM)


def _player(path: Path, topics: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mfapr_ros.cli", "play", str(path), "--topics", *topics,
                             "--image-qos", "reliable", "--wait-subscribers", "1", "--wait-timeout", "20",
                             "--delay", "0.5"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _angle(q_a: np.ndarray, q_b: np.ndarray) -> float:
    """Rotation angle (rad) between two wxyz quaternions, accurate near 0 (arcsin of the vector part)."""
    d = quat_mul(quat_conj(q_a), q_b)
    return float(2 * np.arcsin(min(1.0, np.linalg.norm(d[1:]))))


def _odom_base_gt(truth: dict[str, Any], stamps_ns: list[int]) -> tuple[np.ndarray, np.ndarray]:
    gs, gt, gq = truth["gt"]
    t, q, valid = interpolate_poses(gs, gt - ODOM_SHIFT, gq, stamps_ns)
    assert valid.all()
    return t, q


def test_play_publishes_tf_and_latched_tf_static(bag, ros_env, rclpy_context) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    from mfapr_ros.ros.convert import msg_to_pose, time_to_ns

    path, truth = bag
    node = rclpy.create_node("tf_play_sink", context=rclpy_context)
    dyn: list = []
    static: list = []
    node.create_subscription(TFMessage, "/tf", lambda m: dyn.extend(m.transforms),
                             QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE))
    # a transient_local reader matches only a transient_local writer: receiving anything proves the latched QoS
    node.create_subscription(TFMessage, "/tf_static", lambda m: static.extend(m.transforms),
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                        durability=DurabilityPolicy.TRANSIENT_LOCAL))
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    n_gt = len(truth["gt"][0])
    proc = _player(path, ["/tf", "/tf_static"], ros_env)
    try:
        deadline = time.monotonic() + 40
        while (proc.poll() is None or len(dyn) < n_gt or not static) and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.05)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        ex.shutdown()
        node.destroy_node()
    assert proc.returncode == 0, err
    assert "skipped" not in err, err
    assert len(dyn) == n_gt, (len(dyn), n_gt)
    assert {(tr.header.frame_id, tr.child_frame_id) for tr in dyn} == {("odom", "base_link")}
    stamps = [time_to_ns(tr.header.stamp) for tr in dyn]
    assert stamps == [int(s) for s in truth["gt"][0]]
    t_exp, q_exp = truth["gt"][1] - ODOM_SHIFT, truth["gt"][2]
    got = [msg_to_pose(tr.transform) for tr in dyn]
    np.testing.assert_allclose(np.array([t for t, _ in got]), t_exp, atol=1e-12)
    np.testing.assert_allclose(np.array([q for _, q in got]), q_exp, atol=1e-12)
    (st,) = static
    assert (st.header.frame_id, st.child_frame_id) == ("map", "odom")
    t, q = msg_to_pose(st.transform)
    np.testing.assert_array_equal(t, ODOM_SHIFT)
    np.testing.assert_array_equal(q, [1.0, 0.0, 0.0, 0.0])


def _run_node(rclpy_context, ros_env, path: Path, checkpoint: Path, tf_mode: str, play_topics: list[str],
              name: str) -> tuple[Any, list, list, str]:
    """Run LocalizeNode (``tf_mode``) in-process while `mfapr play` plays ``play_topics``; return (node summary
    holder, ~/pose messages, TransformStamped received on /tf from the node, player stderr)."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    from mfapr_ros.ros.localize_node import LocalizeNode

    ov = [Parameter("checkpoint", value=str(checkpoint)), Parameter("device", value="cpu"),
          Parameter("tf_mode", value=tf_mode), Parameter("diagnostics_period", value=0.0),
          Parameter("path_length", value=0)]
    for topic in CAMS:  # reliable images: every bundle of the short bag reaches the node on a busy box
        ov += [Parameter(f"qos_overrides.{topic}.subscription.reliability", value="reliable"),
               Parameter(f"qos_overrides.{topic}.subscription.depth", value=50)]
    node = LocalizeNode(name, context=rclpy_context, parameter_overrides=ov)
    tester = rclpy.create_node(f"{name}_tester", context=rclpy_context)
    poses: list = []
    tfs: list = []
    parent_child = ("map", "base_link") if tf_mode == "map_to_base" else ("map", "odom")
    tester.create_subscription(PoseStamped, f"/{name}/pose", poses.append, 100)
    tester.create_subscription(
        TFMessage, "/tf", lambda m: tfs.extend(tr for tr in m.transforms
                                               if (tr.header.frame_id, tr.child_frame_id) == parent_child),
        QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE))
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(node)
    ex.add_node(tester)
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(ex, stop), daemon=True)
    spinner.start()
    proc = None
    try:
        assert node.tf is not None and node.tf.enabled
        wait(lambda: node.pub_pose.get_subscription_count() >= 1, 20, "the pose subscription to match")
        proc = _player(path, play_topics, ros_env)
        wait(lambda: proc.poll() is not None, 40, "mfapr play to finish")
        tf_out = node.tf

        def settled() -> tuple:
            done = len(poses) == node.poses_published >= 1 and len(tfs) == tf_out.sent
            return (done, len(poses), len(tfs), tf_out.lookup_failures)

        wait_stable(settled, 0.5, 30, "every pose and TF to arrive")
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err
        stats = {"sent": tf_out.sent, "failures": tf_out.lookup_failures, "waiting": tf_out.waiting,
                 "poses": node.poses_published, "backend": tf_out.backend, "tf": tf_out}
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        stop.set()
        spinner.join(5)
        ex.shutdown()
        tester.destroy_node()
        node.destroy_node()
    return stats, poses, tfs, err


def test_node_map_to_base_tf_equals_pose(bag, checkpoint, ros_env, rclpy_context) -> None:
    from mfapr_ros.ros import tf_output
    from mfapr_ros.ros.convert import msg_to_pose, time_to_ns

    path, _ = bag
    stats, poses, tfs, _ = _run_node(rclpy_context, ros_env, path, checkpoint, "map_to_base", CAMS, "tf_base_loc")
    assert stats["backend"] == tf_output.tf_backend()
    assert stats["sent"] == len(poses) == len(tfs) >= 1, stats
    by_stamp = {time_to_ns(tr.header.stamp): tr for tr in tfs}
    for ps in poses:
        tr = by_stamp[time_to_ns(ps.header.stamp)]  # same stamp, every pose
        t_p, q_p = msg_to_pose(ps.pose)
        t_t, q_t = msg_to_pose(tr.transform)
        np.testing.assert_allclose(t_t, t_p, atol=1e-12)
        assert _angle(q_p, q_t) < 1e-9


def test_node_map_to_odom_rep105_identity(bag, checkpoint, ros_env, rclpy_context) -> None:
    from mfapr_ros.ros.convert import msg_to_pose, time_to_ns

    path, truth = bag
    # cameras + the odometry stream; the bag's static map→odom is left out: the node must be the one owning map→odom
    stats, poses, tfs, _ = _run_node(rclpy_context, ros_env, path, checkpoint, "map_to_odom", CAMS + ["/tf"],
                                     "tf_odom_loc")
    assert stats["sent"] > 0, stats
    # every pose's map→odom is sent, counted as failed, or (the last ones) still waiting for odometry to reach it
    assert stats["sent"] + stats["failures"] + stats["waiting"] == stats["poses"] == len(poses), stats
    assert stats["waiting"] <= 1, stats
    assert len(tfs) == stats["sent"]
    tf_out = stats["tf"]
    if tf_out.backend == "tf2_msgs":  # the fallback listener heard the whole odometry stream, and no further
        gs = truth["gt"][0]
        assert tf_out.buffer.span("odom", "base_link") == (int(gs[0]), int(gs[-1]))
        with pytest.raises(LookupError, match="future"):
            tf_out.lookup("odom", "base_link", int(gs[-1]) + 1)
    pose_by_stamp = {time_to_ns(ps.header.stamp): ps for ps in poses}
    stamps = [time_to_ns(tr.header.stamp) - TOLERANCE_NS for tr in tfs]  # future-dated by transform_tolerance
    t_ob, q_ob = _odom_base_gt(truth, stamps)
    worst_t = worst_r = 0.0
    for tr, s, t_gt, q_gt in zip(tfs, stamps, t_ob, q_ob, strict=True):
        t_mo, q_mo = msg_to_pose(tr.transform)
        t_mb, q_mb = pose_compose(t_mo, q_mo, t_gt, q_gt)  # map→odom · odom→base_link = map→base_link
        t_p, q_p = msg_to_pose(pose_by_stamp[s].pose)
        worst_t = max(worst_t, float(np.linalg.norm(t_mb - t_p)))
        worst_r = max(worst_r, _angle(q_mb, q_p))
    assert worst_t < 1e-6 and worst_r < 1e-6, (worst_t, worst_r)
