"""localize_node end to end over real DDS (PyPI ROS 2 wheels, Fast DDS on loopback, conftest's domain id).

A test node publishes synthetic images on 4 and on 10 camera topics (half raw, half compressed JPEG, jittered
stamps, one camera dying mid-run, bad messages injected); the localization node runs in-process on a
MultiThreadedExecutor with a tiny random checkpoint. Asserts: pose count, stamps = bundle stamps, frames, finite
values, masks (partial bundles after the camera dies), drops counted by cause, diagnostics, clean shutdown.
A second test runs the console script with the params file and checks startup refusal and SIGINT shutdown.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy")
pytest.importorskip("mfapr_ros.inference.localizer")
pytest.importorskip("mfapr_ros.core.images")

from helpers import IMG, PERIOD_NS, ROOT, jpeg, make_checkpoint, spin, wait, wait_stable  # noqa: E402


@pytest.mark.parametrize("num_cameras", [4, 10])
def test_node_end_to_end(rclpy_context, tmp_path: Path, num_cameras: int) -> None:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
    from nav_msgs.msg import Path as PathMsg
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage, Image

    from mfapr_ros.ros import convert as rc
    from mfapr_ros.ros.localize_node import POSE_COV_QOS, LocalizeNode
    from mfapr_ros.ros.runtime import make_executor

    ckpt = make_checkpoint(tmp_path, num_cameras)
    compressed = {i for i in range(num_cameras) if i % 2 == 1}
    dying = 2  # raw camera that stops half-way
    threads_before = set(threading.enumerate())
    overrides = [Parameter("checkpoint", value=str(ckpt)), Parameter("device", value="cpu"),
                 Parameter("sync.min_cameras", value=num_cameras - 1), Parameter("sync.stream_timeout", value=0.2),
                 Parameter("path_length", value=5), Parameter("diagnostics_period", value=0.3),
                 Parameter("tf_mode", value="map_to_base")]
    overrides += [Parameter(f"transport.cam{i}", value="compressed") for i in compressed]
    # reliable image transport through the standard qos_overrides parameters: exact counts below must not depend on
    # best-effort losses on a loaded CI box (the sensor-data default is covered by test_image_qos_default_and_override)
    topics = [f"/cam{i}/image_raw" + ("/compressed" if i in compressed else "") for i in range(num_cameras)]
    for topic in topics:
        overrides += [Parameter(f"qos_overrides.{topic}.subscription.reliability", value="reliable"),
                      Parameter(f"qos_overrides.{topic}.subscription.depth", value=50)]
    node = LocalizeNode(f"loc{num_cameras}", context=rclpy_context, parameter_overrides=overrides)
    got_rig_poses: list = []
    node.on_pose.append(got_rig_poses.append)
    assert [b.topic for b in node.bindings] == topics

    tester = rclpy.create_node(f"tester{num_cameras}", context=rclpy_context)
    poses: list[PoseStamped] = []
    covs: list[PoseWithCovarianceStamped] = []
    paths: list[PathMsg] = []
    diags: list[DiagnosticArray] = []
    base = f"/loc{num_cameras}"
    tester.create_subscription(PoseStamped, f"{base}/pose", poses.append, 50)
    # the node keeps depth 1 (latched latest pose); the tester keeps 50 so a busy executor loses none of them
    cov_qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, durability=POSE_COV_QOS.durability)
    tester.create_subscription(PoseWithCovarianceStamped, f"{base}/pose_with_covariance", covs.append, cov_qos)
    tester.create_subscription(PathMsg, f"{base}/path", paths.append, 50)
    tester.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    pubs = [tester.create_publisher(CompressedImage if i in compressed else Image,
                                    node.bindings[i].topic, reliable) for i in range(num_cameras)]
    # both executors localize_node can run on (executor_threads): multi-threaded with 4 cameras, the default
    # single-threaded one with 10
    executor = make_executor(3 if num_cameras == 4 else 1, rclpy_context)
    assert isinstance(executor, MultiThreadedExecutor) == (num_cameras == 4)
    executor.add_node(node)
    executor.add_node(tester)
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(executor, stop), daemon=True)
    spinner.start()
    try:
        wait(lambda: all(p.get_subscription_count() >= 1 for p in pubs), 20, "camera subscriptions to match")
        node_pose_pub = node.pub_pose
        wait(lambda: node_pose_pub.get_subscription_count() >= 1, 20, "the pose subscription to match")

        rng = np.random.default_rng(num_cameras)
        frames, die_at = 16, 8
        t0 = 1_000_000_000_000
        expected_stamps: dict[int, set[int]] = {}  # frame → possible bundle stamps
        def truncated(stamp: int):
            m = rc.numpy_to_image_msg(np.zeros((IMG, IMG, 3), np.uint8), "rgb8", stamp)
            m.data = bytes(m.data)[: IMG * 3 * 5]
            return m

        # bad frames before the camera dies: unsupported encoding, corrupt JPEG, truncated raw data, wrong size; each
        # bundle keeps num_cameras - 1 good frames, so it is scored with that camera masked (sync.min_cameras)
        bad_frames = {
            (3, 0): lambda st: rc.numpy_to_image_msg(np.zeros((IMG, IMG, 2), np.uint8), "yuv422", st),
            (4, 1): lambda st: rc.encoded_to_compressed_msg(b"\xff\xd8\xff\xe0 corrupt", "jpeg", st),
            (5, 0): truncated,
            (6, 0): lambda st: rc.numpy_to_image_msg(np.zeros((IMG + 8, IMG, 3), np.uint8), "rgb8", st),
        }
        for k in range(frames):
            stamps = [t0 + k * PERIOD_NS + int(rng.integers(-3_000_000, 3_000_000)) for _ in range(num_cameras)]
            present = [i for i in range(num_cameras) if not (i == dying and k >= die_at)]
            expected_stamps[k] = {max(stamps[i] for i in present), max(stamps)}
            for i in present:
                img = np.full((IMG, IMG, 3), (k * 13 + i * 29) % 256, np.uint8)
                img[: IMG // 2] = rng.integers(0, 256, (IMG // 2, IMG, 3), dtype=np.uint8)
                if i in compressed:
                    msg = rc.encoded_to_compressed_msg(jpeg(img), "jpeg", stamps[i], f"cam{i}")
                else:
                    msg = rc.numpy_to_image_msg(img, "rgb8", stamps[i], f"cam{i}")
                if (k, i) in bad_frames:  # a camera's frame replaced by a bad message (decoded once bundled)
                    msg = bad_frames[(k, i)](stamps[i])
                pubs[i].publish(msg)
            time.sleep(0.06)
        wait(lambda: node.diagnostics_summary()["bundles"] >= frames - 3, 30, "bundles")

        def settled() -> tuple:
            s = node.diagnostics_summary()
            done = (len(poses) >= 1 and len(got_rig_poses) == node.poses_published == len(poses) == len(covs)
                    and node.poses_published + s["drops"].get("inference.stale", 0) == s["bundles"]
                    and len(diags) >= 2)
            return (done, s["bundles"], len(poses), len(covs))

        # no input is left, so once every bundle is inferred or counted stale and every pose has arrived with its
        # covariance twin, nothing can change any more: require that state to hold for 0.5 s before stopping
        wait_stable(settled, 0.5, 40, "all bundles to be inferred or counted stale and their poses to arrive")
    finally:
        stop.set()
        spinner.join(5)
    summary = node.diagnostics_summary()
    # --- poses: count, stamps equal to bundle stamps, frames, finite values
    all_expected = set().union(*expected_stamps.values())
    # latest-bundle-wins: on a loaded 2-core CI box some bundles are legitimately superseded (counted below)
    assert len(poses) >= frames // 4, summary
    assert len(poses) + summary["drops"]["inference.stale"] == summary["bundles"]
    stamps_out = [rc.time_to_ns(p.header.stamp) for p in poses]
    assert set(stamps_out) <= all_expected
    assert stamps_out == sorted(stamps_out)
    for p, c in zip(poses, covs, strict=True):
        assert p.header.frame_id == "map" and c.header.frame_id == "map"
        assert c.header.stamp == p.header.stamp
        t, q = rc.msg_to_pose(p.pose)
        assert np.all(np.isfinite(t)) and abs(np.linalg.norm(q) - 1) < 1e-6
        cov = np.array(c.pose.covariance).reshape(6, 6)
        assert np.all(np.isfinite(cov)) and np.all(np.diag(cov) > 0)
    # --- masks: full bundles before the camera died, partial (slot `dying` masked) after
    masks = np.array([np.asarray(rp.mask, bool) for rp in got_rig_poses])
    late = [m for rp, m in zip(got_rig_poses, masks, strict=True) if rp.stamp_ns > t0 + (die_at + 4) * PERIOD_NS]
    assert late and all(not m[dying] and m.sum() == num_cameras - 1 for m in late)
    assert any(m.all() for m in masks)
    assert summary["partial_bundles"] >= len(late)
    # --- path bounded, drops counted by cause and per camera
    assert paths and len(paths[-1].poses) == min(5, len(poses))
    assert paths[-1].header.frame_id == "map"
    drops = summary["drops"]
    # a bad frame is found when its bundle is decoded; a bundle superseded by a newer one (latest wins, counted
    # stale) is never decoded, so on a loaded box up to `stale` of them may go uncounted as bad frames
    decoded_bad = sum(v for k, v in drops.items() if k.startswith("decode."))
    assert len(bad_frames) - drops["inference.stale"] <= decoded_bad <= len(bad_frames)
    if drops["inference.stale"] == 0:
        assert drops.get("decode.unsupported_encoding") == 1
        assert drops.get("decode.wrong_size", 0) == 2  # truncated data + a 40x32 image where the rig says 32x32
        assert drops.get("decode.corrupt", 0) == 1
        cams = {c["name"]: c for c in summary["cameras"]}
        assert sum(cams["cam0"]["drops"].values()) == 3 and sum(cams["cam1"]["drops"].values()) == 1
    assert "bundle.bad_frame_bundle" not in drops  # num_cameras - 1 good frames are enough (sync.min_cameras)
    cams = {c["name"]: c for c in summary["cameras"]}
    assert cams["cam0"]["received"] == frames and cams[f"cam{dying}"]["received"] == die_at
    assert summary["device"] == "cpu" and summary["latency_p50_ms"] > 0
    assert summary["tf_mode"] in ("off", "map_to_base")
    # --- /diagnostics: one localization status + one per camera, with the documented keys
    last = diags[-1]
    names = [s.name for s in last.status]
    assert len(names) == num_cameras + 1 and names[0].endswith("localization")
    keys = {kv.key for kv in last.status[0].values}
    assert {"bundle_rate_hz", "latency_p50_ms", "latency_p99_ms", "device", "drops.decode.corrupt"} & keys >= {
        "bundle_rate_hz", "latency_p50_ms", "latency_p99_ms", "device"}
    cam_keys = {kv.key for kv in last.status[1].values}
    assert {"rate_hz", "received", "topic"} <= cam_keys
    # --- clean shutdown: no thread of ours left
    executor.shutdown()
    tester.destroy_node()
    node.destroy_node()
    node.destroy_node()  # idempotent
    time.sleep(0.1)
    leaked = [t for t in set(threading.enumerate()) - threads_before if t.is_alive()]
    assert not leaked, leaked


def _node_cmd() -> list[str]:
    exe = shutil.which("localize_node", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "mfapr_ros.ros.localize_node"]


def test_console_script_refuses_bad_parameter(ros_env: dict[str, str], tmp_path: Path) -> None:
    ckpt = make_checkpoint(tmp_path, 4)
    cmd = _node_cmd() + ["--ros-args", "--params-file", str(ROOT / "config" / "localize.yaml"),
                         "-p", f"checkpoint:={ckpt}", "-p", "tf_mode:=map_to_moon"]
    r = subprocess.run(cmd, env=ros_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "tf_mode" in r.stderr and "map_to_moon" in r.stderr
    r = subprocess.run(_node_cmd() + ["--ros-args", "-p", "sync.slop:=0.01"], env=ros_env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "checkpoint" in r.stderr


def poses_from_console_node(rclpy_context, proc: subprocess.Popen, node_name: str, t0_ns: int) -> list:
    """Drive a console-script node in ``proc``: wait (60 s) until it subscribes to /cam0..3/image_raw, publish
    bundles stamped ``t0_ns + k·PERIOD_NS`` until its first ``~/pose_with_covariance`` arrives (30 s), return what
    arrived. Shared by the plain and the lifecycle console-script tests; the caller stops ``proc``."""
    import rclpy
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from mfapr_ros.ros import convert as rc
    from mfapr_ros.ros.localize_node import POSE_COV_QOS

    tester = rclpy.create_node(f"{node_name}_tester", context=rclpy_context)
    got: list = []
    tester.create_subscription(PoseWithCovarianceStamped, f"/{node_name}/pose_with_covariance", got.append,
                               POSE_COV_QOS)
    pubs = [tester.create_publisher(Image, f"/cam{i}/image_raw", qos_profile_sensor_data) for i in range(4)]
    ex = SingleThreadedExecutor(context=rclpy_context)
    ex.add_node(tester)
    try:
        deadline = time.monotonic() + 60
        while not all(p.get_subscription_count() for p in pubs):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, f"{node_name}'s camera subscriptions never matched"
            ex.spin_once(timeout_sec=0.05)
        k, deadline = 0, time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            stamp = t0_ns + k * PERIOD_NS
            for p in pubs:
                p.publish(rc.numpy_to_image_msg(np.full((IMG, IMG, 3), k % 255, np.uint8), "rgb8", stamp))
            k += 1
            ex.spin_once(timeout_sec=0.05)
    finally:
        ex.shutdown()
        tester.destroy_node()
    return got


def test_console_script_runs_and_stops_cleanly(rclpy_context, ros_env: dict[str, str], tmp_path: Path) -> None:
    from mfapr_ros.ros import convert as rc

    ckpt = make_checkpoint(tmp_path, 4)
    env = dict(ros_env, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = _node_cmd() + ["--ros-args", "--params-file", str(ROOT / "config" / "localize.yaml"),
                         "-p", f"checkpoint:={ckpt}", "-p", "device:=cpu", "-r", "__node:=sub_loc"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        got = poses_from_console_node(rclpy_context, proc, "sub_loc", 5_000_000_000)
        assert got, "no pose from the console-script node"
        assert got[0].header.frame_id == "map"
        assert (rc.time_to_ns(got[0].header.stamp) - 5_000_000_000) % PERIOD_NS == 0
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0, out
        assert "Traceback" not in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_image_qos_default_and_override(rclpy_context, tmp_path: Path) -> None:
    """Image subscriptions default to sensor-data QoS; ``qos_overrides.<topic>.subscription.*`` (the standard ROS 2
    mechanism) changes one camera's reliability and depth without touching the others."""
    from rclpy.parameter import Parameter
    from rclpy.qos import ReliabilityPolicy, qos_profile_sensor_data

    from mfapr_ros.ros.localize_node import LocalizeNode

    ckpt = make_checkpoint(tmp_path, 4)
    overrides = [Parameter("checkpoint", value=str(ckpt)), Parameter("device", value="cpu"),
                 Parameter("qos_overrides./cam1/image_raw.subscription.reliability", value="reliable"),
                 Parameter("qos_overrides./cam1/image_raw.subscription.depth", value=30)]
    node = LocalizeNode("qos_loc", context=rclpy_context, parameter_overrides=overrides)
    try:
        profiles = [s.qos_profile for s in node._subs]
        assert profiles[1].reliability == ReliabilityPolicy.RELIABLE and profiles[1].depth == 30
        for i in (0, 2, 3):
            assert profiles[i].reliability == qos_profile_sensor_data.reliability == ReliabilityPolicy.BEST_EFFORT
            assert profiles[i].depth == qos_profile_sensor_data.depth
        assert node.get_parameter("qos_overrides./cam1/image_raw.subscription.depth").value == 30
    finally:
        node.destroy_node()


def test_drop_summary_sums_cameras_and_separates_model_drops(rclpy_context, tmp_path: Path) -> None:
    """``drops.decode.<cause>`` sums every camera's drops of that cause; the model side's are ``inference.<cause>``."""
    from rclpy.parameter import Parameter

    from mfapr_ros.ros.localize_node import LocalizeNode

    node = LocalizeNode("drops_loc", context=rclpy_context, parameter_overrides=[
        Parameter("checkpoint", value=str(make_checkpoint(tmp_path, 4))), Parameter("device", value="cpu")])
    try:
        node.drops.drop("cam0", "corrupt", "x")
        node.drops.drop("cam2", "corrupt", "x")
        node.drops.drop("cam2", "wrong_size", "x")
        node._on_inference_error(RuntimeError("boom"))
        drops = node.diagnostics_summary()["drops"]
        assert drops["decode.corrupt"] == 2 and drops["decode.wrong_size"] == 1
        assert drops["inference.inference_error"] == 1 and "decode.inference_error" not in drops
        cams = {c["name"]: c["drops"] for c in node.diagnostics_summary()["cameras"]}
        assert cams["cam2"] == {"corrupt": 1, "wrong_size": 1} and cams["cam1"] == {}
    finally:
        node.destroy_node()


def test_executor_threads_parameter(rclpy_context) -> None:
    """``executor_threads`` picks the console scripts' executor; 0 is refused by name."""
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    from mfapr_ros.core.errors import ConfigError
    from mfapr_ros.ros.params import validate_params
    from mfapr_ros.ros.runtime import make_executor

    assert validate_params({"checkpoint": "m.json"}).executor_threads == 1
    assert validate_params({"checkpoint": "m.json", "executor_threads": 4}).executor_threads == 4
    with pytest.raises(ConfigError, match="executor_threads"):
        validate_params({"checkpoint": "m.json", "executor_threads": 0})
    # the bundle wait queue: 2 by default (absorbs the model's jitter), 1 = latest wins, 0 refused by name
    assert validate_params({"checkpoint": "m.json"}).bundle_queue_depth == 2
    assert validate_params({"checkpoint": "m.json", "bundle_queue_depth": 1}).bundle_queue_depth == 1
    with pytest.raises(ConfigError, match="bundle_queue_depth"):
        validate_params({"checkpoint": "m.json", "bundle_queue_depth": 0})
    from mfapr_ros.ros.runtime import NodeExecutor

    for threads, kind in ((1, SingleThreadedExecutor), (4, NodeExecutor)):
        ex = make_executor(threads, rclpy_context)
        try:
            assert type(ex) is kind and isinstance(ex, SingleThreadedExecutor | MultiThreadedExecutor)
        finally:
            ex.shutdown()


def test_node_executor_runs_subscriptions_in_the_spinning_thread(rclpy_context) -> None:
    """executor_threads > 1: subscription callbacks are taken and run in the spinning thread, as on the
    single-threaded executor (no busy wake-ups while a pool thread has yet to take the message); timers run on the
    pool."""
    import rclpy
    from rclpy.callback_groups import ReentrantCallbackGroup
    from std_msgs.msg import String

    from mfapr_ros.ros.runtime import make_executor

    node = rclpy.create_node("inline_test", context=rclpy_context)
    where: dict[str, set[str]] = {"sub": set(), "timer": set()}
    node.create_subscription(String, "/inline_test", lambda m: where["sub"].add(threading.current_thread().name),
                             10, callback_group=ReentrantCallbackGroup())
    node.create_timer(0.01, lambda: where["timer"].add(threading.current_thread().name))
    pub = node.create_publisher(String, "/inline_test", 10)
    ex = make_executor(3, rclpy_context)
    ex.add_node(node)
    stop = threading.Event()
    th = threading.Thread(target=spin, args=(ex, stop), name="spinner", daemon=True)
    th.start()
    try:
        wait(lambda: pub.get_subscription_count() >= 1, 10, "the subscription to match")
        for _ in range(20):
            pub.publish(String(data="x"))
            time.sleep(0.01)
        wait(lambda: where["sub"] and where["timer"], 10, "callbacks")
    finally:
        stop.set()
        th.join(5)
        ex.shutdown()
        node.destroy_node()
    assert where["sub"] == {"spinner"} and "spinner" not in where["timer"]


def test_inference_threads_parameter(rclpy_context, tmp_path: Path) -> None:
    """``inference_threads`` caps torch's intra-op threads before the model is loaded; negative values are refused."""
    import torch
    from rclpy.parameter import Parameter

    from mfapr_ros.core.errors import ConfigError
    from mfapr_ros.ros.localize_node import LocalizeNode
    from mfapr_ros.ros.params import validate_params

    with pytest.raises(ConfigError, match="inference_threads"):
        validate_params({"checkpoint": "m.json", "inference_threads": -1})
    before = torch.get_num_threads()
    want = before + 1  # differs from the current value whatever the machine, so the assertion can fail
    node = LocalizeNode("threads_loc", context=rclpy_context, parameter_overrides=[
        Parameter("checkpoint", value=str(make_checkpoint(tmp_path, 4))), Parameter("device", value="cpu"),
        Parameter("inference_threads", value=want)])
    try:
        assert torch.get_num_threads() == want and node.params.inference_threads == want
    finally:
        node.destroy_node()
        torch.set_num_threads(before)


@pytest.mark.parametrize("torchscript", [True, False])
def test_torchscript_parameter_selects_the_inference_path(rclpy_context, tmp_path: Path, torchscript: bool) -> None:
    """``torchscript`` (default true) reaches the Localizer: a verified TorchScript graph, or eager PyTorch."""
    from rclpy.parameter import Parameter

    from mfapr_ros.ros.localize_node import LocalizeNode

    overrides = [Parameter("checkpoint", value=str(make_checkpoint(tmp_path, 4))), Parameter("device", value="cpu")]
    if not torchscript:
        overrides.append(Parameter("torchscript", value=False))
    node = LocalizeNode("ts_loc", context=rclpy_context, parameter_overrides=overrides)
    try:
        assert node.params.torchscript is torchscript
        assert node.localizer.inference_path == ("torchscript" if torchscript else "eager")
        assert (node.localizer.compiled is not None) is torchscript
    finally:
        node.destroy_node()
