"""Keep DDS on this machine: the one helper that every test, script and demo uses to set up ROS 2's environment.

rclpy reads these variables when the context initialises, so set them before ``rclpy.init`` and pass the same
environment to every child process (node, player, evaluator) of a run.
"""

from __future__ import annotations

import os
import random
from collections.abc import MutableMapping

LOCALHOST_VARS = {
    "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",  # Iron and newer
    "ROS_LOCALHOST_ONLY": "1",  # Humble and older (deprecated later, harmless)
}

#: Domain ids valid on Linux with the default port mapping are 0..101 (and 215..232); keep clear of 0.
_DOMAIN_RANGE = (10, 101)


def pick_domain_id(seed: int | None = None) -> int:
    """A domain id for this run: distinct per process so parallel test runs never see each other."""
    rng = random.Random(seed if seed is not None else os.getpid() ^ int.from_bytes(os.urandom(4), "little"))
    return rng.randint(*_DOMAIN_RANGE)


def localhost_env(domain_id: int | None = None, base: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with localhost-only discovery and a ``ROS_DOMAIN_ID``."""
    env = dict(os.environ if base is None else base)
    env.update(LOCALHOST_VARS)
    env["ROS_DOMAIN_ID"] = str(pick_domain_id() if domain_id is None else domain_id)
    return env


def apply_localhost_env(domain_id: int | None = None) -> int:
    """Set localhost-only discovery in this process's environment; returns the domain id in use.

    An already-set ``ROS_DOMAIN_ID`` is kept unless ``domain_id`` is given, so a launcher can choose it.
    """
    os.environ.update(LOCALHOST_VARS)
    if domain_id is not None:
        os.environ["ROS_DOMAIN_ID"] = str(domain_id)
    elif "ROS_DOMAIN_ID" not in os.environ:
        os.environ["ROS_DOMAIN_ID"] = str(pick_domain_id())
    return int(os.environ["ROS_DOMAIN_ID"])
