"""The ROS-free ground floor shared by the node, the bag evaluator and training: geometry, rig, images,
preprocessing, the one synchronizer and checkpoints. It imports nothing above it (models, inference, evaluation,
ros: test/test_imports.py); the Localizer is in :mod:`mfapr_ros.inference`.

No module here imports rclpy or a ROS message package (test/core/test_layering.py walks the tree), so everything
in it runs and is tested on a machine without ROS.
"""
