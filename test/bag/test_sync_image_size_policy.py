"""The pre-synchronizer size filter of ``iter_bundles(enforce_image_size=True)`` (``mfapr explain``): a wrong-size
image is dropped before the synchronizer (counted ``wrong_size``), never resized, its size read from the header
without decoding. The node and eval-bag check the size after the synchronizer, with the one bad-frame rule
(core.bundle_decode; test/ros/test_bad_frame_offline_live.py)."""

from __future__ import annotations

import pytest

from mfapr_ros.bag.bundles import CameraBinding, iter_bundles, message_size
from mfapr_ros.bag.reader import BagReader
from mfapr_ros.bag.synth import SynthBagSpec, write_synth_bag
from mfapr_ros.core.drops import DropCounter
from mfapr_ros.core.sync import SyncSettings

TOPICS = [f"/cam{i}/image_raw" for i in range(2)]


@pytest.mark.parametrize("compressed", [False, True])
def test_wrong_size_dropped_before_sync_like_the_node(tmp_path, compressed: bool) -> None:
    path = tmp_path / "b"
    write_synth_bag(path, SynthBagSpec(TOPICS, frames=10, size=32, compressed=compressed))
    topics = [t + "/compressed" for t in TOPICS] if compressed else TOPICS
    with BagReader(path) as bag:
        m = next(iter(bag.messages(topics)))
        assert message_size(m) == (32, 32)
        right = [CameraBinding(i, f"cam{i}", t, "raw", 32, 32) for i, t in enumerate(topics)]
        wrong = [CameraBinding(0, "cam0", topics[0], "raw", 32, 32), CameraBinding(1, "cam1", topics[1], "raw", 64, 48)]
        assert CameraBinding(1, "cam1", topics[1], "raw", 64, 48).size_mismatch(32, 32).startswith("32x32 px")
        drops = DropCounter.for_reader()
        ok = list(iter_bundles(bag, right, SyncSettings().make(2), drops=drops, enforce_image_size=True))
        assert len(ok) == 10 and drops == {}
        drops = DropCounter.for_reader()
        sync = SyncSettings().make(2)
        bad = list(iter_bundles(bag, wrong, sync, drops=drops, enforce_image_size=True))
        assert bad == [] and drops["wrong_size"] == 10
        assert sync.stats["received"] == 10  # only camera 0 reached the synchronizer, as in the node
