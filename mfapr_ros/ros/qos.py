"""The node's QoS profiles and timing constants (moved out of localize_node so it reads as the lifecycle steps)."""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

__all__ = ["PARALLEL_DECODE_MIN_S", "PATH_PERIOD_S", "POSE_COV_QOS", "POSE_QOS", "image_qos"]

#: ``~/pose_with_covariance``: reliable + transient_local depth 1, what robot_localization / nav2 expect.
POSE_COV_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.TRANSIENT_LOCAL)
POSE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
#: with executor_threads > 1, concurrent decoding of a bundle's frames is tried once sequential decoding takes at least
#: this long per frame (seconds, running mean), and kept only while faster (core.bundle_decode.ParallelDecodePolicy)
PARALLEL_DECODE_MIN_S = 2e-3
#: ~/path is republished at most this often (seconds): it holds up to path_length (1000) poses, and converting
#: that list for every pose cost milliseconds per pose on the inference thread at 100+ poses/s (issue 25)
PATH_PERIOD_S = 0.2


def image_qos() -> QoSProfile:
    """A fresh copy of the sensor-data profile for one image subscription.

    A copy, because rclpy applies ``qos_overrides.<topic>.subscription.*`` by editing the profile object it is given:
    handing it the module-global ``qos_profile_sensor_data`` would leak one camera's override into every later
    subscription of the process.
    """
    q = qos_profile_sensor_data
    return QoSProfile(history=q.history, depth=q.depth, reliability=q.reliability, durability=q.durability)
