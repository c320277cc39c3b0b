"""The ROS 2 side: the only modules that import rclpy or message packages.

Each node here is a thin shell over :mod:`mfapr_ros.core` (parameters validated into a frozen dataclass, messages
converted at the edge, everything else delegated). The package itself imports nothing, so
``mfapr_ros.ros.params`` and ``mfapr_ros.ros.env`` stay usable without rclpy.
"""
