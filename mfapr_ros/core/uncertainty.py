"""Deprecated import path: the uncertainty gate lives in :mod:`mfapr_ros.inference.uncertainty`.

Kept only for ros/localize_node.py, which another branch is rewriting; delete this file once it imports
``mfapr_ros.inference.uncertainty`` (test/test_imports.py lists it as a core → inference exception).
"""

from mfapr_ros.inference.uncertainty import UncertaintyStats, judge, with_covariance  # noqa: F401
