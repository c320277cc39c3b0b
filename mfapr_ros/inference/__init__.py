"""Inference, above ``models/``: a checkpoint → published poses, and what the poses mean.

``localizer`` (:class:`Localizer`, :class:`AsyncLocalizer`, :class:`RigPose`, device and precision rules),
``covariance`` (the model's output → the published 6×6 covariance), ``calibration`` (its σ scale, fitted by
``mfapr calibrate``), ``uncertainty`` (the gate: keep, inflate or skip an unsure pose) and ``baselines`` (the
training mean pose and the image-retrieval prior beside a checkpoint). ROS-free; the node, the bag evaluator and
training import them. Importing this package imports nothing heavy: import the module you need.
"""
