"""``~/fused_pose`` without DDS traffic: parameters, the odom lookup through TfOutput, pass-through counted, the TF
pose the node broadcasts, GTSAM missing = one warning and the topic off."""

from __future__ import annotations

import dataclasses
import sys
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rclpy")

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.fusion import FusionSettings
from mfapr_ros.core.geometry import quat_from_yaw
from mfapr_ros.ros import fusion_output, tf_output
from mfapr_ros.ros.convert import msg_to_pose, time_to_ns
from mfapr_ros.ros.params import PARAM_SPECS, NodeParams, validate_params


class _Logger:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def warning(self, m: str) -> None:
        self.lines.append(m)

    info = warning


class _Node:
    def __init__(self) -> None:
        self.log = _Logger()

    def get_logger(self) -> _Logger:
        return self.log


class _Pub:
    def __init__(self) -> None:
        self.msgs: list = []

    def publish(self, m) -> None:
        self.msgs.append(m)


def _params(**kw):
    return validate_params({"checkpoint": "x.json", **kw})


COV = np.diag([0.09, 0.09, 0.01, 0.0025, 0.0025, 0.0025])


def _pose(k: int, x: float):
    return SimpleNamespace(stamp_ns=1_000_000_000 + k * 100_000_000, t=np.array([x, 0.0, 0.0]), q=quat_from_yaw(0.0),
                           covariance=COV)


def test_fusion_parameters_are_the_core_settings():
    """One table: every FusionSettings field is a fusion.* parameter with the same default, NodeParams mirrors it,
    and a bad value is refused by the core validation, named as a parameter."""
    specs = {s.name: s for s in PARAM_SPECS if s.name.startswith("fusion.")}
    for f in dataclasses.fields(FusionSettings):
        assert specs[f"fusion.{f.name}"].default == f.default
        assert next(g for g in dataclasses.fields(NodeParams) if g.name == f"fusion_{f.name}").default == f.default
    p = _params(**{"fusion.enabled": True, "fusion.lag": 3.0})
    assert p.fusion == FusionSettings(enabled=True, lag=3.0)
    with pytest.raises(ConfigError, match="fusion.robust_loss"):
        _params(**{"fusion.robust_loss": "l1"})


def test_fused_pose_published_from_odometry_via_tf_output_lookup():
    pytest.importorskip("gtsam")
    odom = {}

    def lookup(target, source, stamp_ns):
        assert (target, source) == ("odom", "base_link")
        if stamp_ns not in odom:
            raise tf_output.TfLookupError("extrapolation into the future")
        return odom[stamp_ns]

    p = _params(**{"fusion.enabled": True}, tf_mode="map_to_odom")
    tf = tf_output.TfOutput(_Node(), p, "base_link", broadcaster=SimpleNamespace(sendTransform=lambda m: None),
                            lookup=lookup)
    node, pub = _Node(), _Pub()
    out = fusion_output.FusionOutput(node, p, "base_link", tf, lambda typ, topic, qos: pub)
    rng = np.random.default_rng(0)
    poses = []
    for k in range(60):  # 1 m/s along x; the network is noisy, the odometry exact; no odometry for k in 30..34
        pose = _pose(k, 0.1 * k + rng.normal(0.0, 0.3))
        if not 30 <= k < 35:
            odom[pose.stamp_ns] = (np.array([0.1 * k, 0.0, 0.0]), quat_from_yaw(0.0))
        poses.append(out.update(pose))
    st = out.summary()
    assert st["received"] == 60 and st["no_odometry"] == 5 and st["initialized"] == 1
    assert out.lookup_failures == 5 and any("passes through" in m for m in node.log.lines)
    assert len(pub.msgs) == 60 and pub.msgs[-1].header.frame_id == "map"
    assert time_to_ns(pub.msgs[-1].header.stamp) == _pose(59, 0).stamp_ns
    t_last, _ = msg_to_pose(pub.msgs[-1].pose.pose)
    assert abs(t_last[0] - 5.9) < 0.25 and np.allclose(poses[-1][0], t_last)
    assert np.asarray(pub.msgs[-1].pose.covariance).reshape(6, 6)[0, 0] < 0.09  # tighter than one network pose


def test_fusion_off_or_without_gtsam_leaves_the_raw_pose(monkeypatch):
    pose = _pose(0, 1.0)
    off = fusion_output.FusionOutput(_Node(), _params(), "base_link", None, lambda *a: pytest.fail("no topic"))
    assert off.update(pose)[0] is pose.t and off.summary() == {}
    monkeypatch.setitem(sys.modules, "gtsam", None)
    node = _Node()
    missing = fusion_output.FusionOutput(node, _params(**{"fusion.enabled": True}), "base_link", None,
                                         lambda *a: pytest.fail("no topic"))
    assert not missing.enabled and missing.update(pose)[0] is pose.t
    assert len(node.log.lines) == 1 and "pip install gtsam==" in node.log.lines[0]


def test_tf_output_listens_for_fusion_even_without_tf_mode(monkeypatch):
    """fusion.enabled with tf_mode none: the odom lookup exists (tf2_msgs listener), nothing is broadcast."""
    if tf_output.tf_backend() != "tf2_msgs":
        pytest.skip("needs the tf2_msgs fallback")
    created = []
    monkeypatch.setattr(tf_output, "TfListener",
                        lambda node, buf, on_update=None: created.append(buf) or SimpleNamespace())
    monkeypatch.setattr(tf_output, "TfBroadcaster", lambda node: pytest.fail("no broadcaster for tf_mode none"))
    tf = tf_output.TfOutput(_Node(), _params(**{"fusion.enabled": True}), "base_link")
    assert tf.lookup is not None and created and not tf.enabled
    assert not tf.publish(0, np.zeros(3), np.array([1.0, 0, 0, 0]))
