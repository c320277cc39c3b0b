"""mfapr_ros: multi-camera absolute pose regression for ROS 2.

The package root stays import-light (no torch, no rclpy) so that `mfapr --version`, the rig loader and the
geometry core work in any environment; heavy modules are imported where they are used.
"""

__version__ = "0.1.0"
