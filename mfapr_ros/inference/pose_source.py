"""What a consumer of poses needs of a localizer, as a type: :class:`PoseSource`.

Why a protocol of its own: the node types ``LocalizeCore.localizer`` without importing
:mod:`mfapr_ros.inference.localizer` (and torch) at module level, and tests and benchmarks inject light fakes
(``localizer_factory``) that satisfy the same two members. The optional extras the node reads when present
(``device``, ``retrieval``, ``retrieval_shifts``) are looked up with ``getattr``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mfapr_ros.core.rig import Rig

    from .localizer import RigPose


class PoseSource(Protocol):
    """A localizer as the node uses it: the rig its slots follow, and one bundle → one :class:`RigPose`."""

    rig: Rig

    def infer(self, images: Sequence[Any], stamp_ns: int, mask: Any = None) -> RigPose:
        """One bundle (slot order = ``rig.cameras``; ``None`` for a missing camera) → its pose."""
        ...
