"""Shared test setup. DDS stays on loopback for every test: the environment is set here, before any rclpy import,
with a ROS_DOMAIN_ID unique to this pytest process (so parallel runs on one machine never talk to each other)."""

from __future__ import annotations

import os

import pytest

from mfapr_ros.ros.env import apply_localhost_env, localhost_env

DOMAIN_ID = apply_localhost_env(domain_id=int(os.environ.get("MFAPR_TEST_DOMAIN_ID", "0")) or None)


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """Environment for child processes (node, player, evaluator): localhost-only, this session's domain id."""
    return localhost_env(DOMAIN_ID)


@pytest.fixture()
def rclpy_context():
    """A fresh rclpy Context, shut down after the test (skips when the ROS 2 wheels are not importable)."""
    rclpy = pytest.importorskip("rclpy")
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        if ctx.ok():
            rclpy.shutdown(context=ctx)
