"""Deprecated import path: the Localizer lives in :mod:`mfapr_ros.inference.localizer` (a layer above models/).

Kept only for ros/localize_node.py, which another branch is rewriting; delete this file once it imports
``mfapr_ros.inference.localizer`` (test/test_imports.py lists it as the one core → inference exception).
"""

from mfapr_ros.inference.localizer import AsyncLocalizer, Localizer, RigPose  # noqa: F401
