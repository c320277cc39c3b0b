"""The ROS-free core shared by the node, the bag evaluator and training: geometry, rig, images, preprocessing,
the one synchronizer, the localizer and checkpoints.

No module here imports rclpy or a ROS message package (test/core/test_layering.py walks the tree), so everything
in it runs and is tested on a machine without ROS.
"""
