"""The one bad-frame rule (core.bundle_decode) and the node's bundle pipeline (core.bundle_pipeline), without ROS."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mfapr_ros.core.bundle_decode import ParallelDecodePolicy, decode_bundle
from mfapr_ros.core.bundle_pipeline import BundlePipeline
from mfapr_ros.core.images import ImageDecodeError


def _decode(i: int, p: object) -> np.ndarray:
    if p == "corrupt":
        raise ImageDecodeError("not a JPEG", "corrupt")
    if p == "boom":
        raise RuntimeError("unexpected")
    size = 40 if p == "big" else 32
    return np.zeros((size, 32, 3), np.uint8)


def _size(i: int, w: int, h: int) -> str | None:
    return None if (w, h) == (32, 32) else f"{w}x{h}"


@pytest.mark.parametrize("pool", [None, ThreadPoolExecutor(3)])
def test_bad_frame_masked_or_bundle_dropped_by_min_present(pool) -> None:
    good = decode_bundle(["ok"] * 4, _decode, 4, _size, pool)
    assert good.keep and good.mask.all() and good.frame_drops == []
    payloads = ["ok", "corrupt", "big", None]  # camera 3 absent from the (partial) bundle
    v = decode_bundle(payloads, _decode, 1, _size, pool)
    assert v.keep and v.mask.tolist() == [True, False, False, False] and v.images[1] is None
    assert [(d.stream, d.cause) for d in v.frame_drops] == [(1, "corrupt"), (2, "wrong_size")]
    assert not decode_bundle(payloads, _decode, 2, _size, pool).keep  # one good frame left, two needed
    unchecked = decode_bundle(payloads, _decode, 2, None, pool)  # enforce_image_size off: the 40 px frame counts
    assert unchecked.keep and unchecked.mask.tolist() == [True, False, True, False]
    err = decode_bundle(["boom", "ok"], _decode, 1)
    assert err.keep and err.frame_drops[0].cause == "error" and "RuntimeError" in err.frame_drops[0].detail
    assert not decode_bundle([None, "corrupt"], _decode, 0).keep  # never scored without an image


def test_pipeline_latest_wins_and_decodes_only_what_is_inferred() -> None:
    prepared: list[int] = []
    results: list[tuple[int, object]] = []
    gate = threading.Event()

    def prepare(item: int):
        prepared.append(item)
        return None if item == 3 else ([item], item)

    def infer(images, stamp: int) -> int:
        gate.wait(5)
        return stamp

    with BundlePipeline(prepare, infer, lambda r, t: results.append((r, t))) as p:
        p.submit(1)  # decoded, then inferred (blocked on the gate)
        time.sleep(0.1)
        p.submit(2)  # decoded one ahead while 1 is in the model
        time.sleep(0.1)
        for k in (4, 5, 6):  # 4 and 5 superseded while 2 waits decoded: never decoded
            p.submit(k)
        gate.set()
        assert p.wait_idle(5)
        p.submit(3)  # rejected by prepare (a bad-frame bundle)
        assert p.wait_idle(5)
        stats = p.stats
    assert [r for r, _ in results] == [1, 2, 6]
    assert prepared == [1, 2, 6, 3]
    assert stats["stale_dropped"] == 2 and stats["rejected"] == 1 and stats["processed"] == 3
    assert all(t.inference_s >= 0 and t.decode_s >= 0 and t.wait_s >= 0 for _, t in results)
    assert results[0][1].inference_s > 0.04  # the gate held the first inference


def test_pipeline_discard_close_and_errors() -> None:
    errors: list[BaseException] = []
    release = threading.Event()

    def infer(images, stamp: int) -> int:
        if stamp == 9:
            raise ValueError("bad bundle")
        release.wait(5)
        return stamp

    p = BundlePipeline(lambda k: ([k], k), infer, lambda r, t: None, on_error=errors.append)
    p.submit(9)
    assert p.wait_idle(5) and p.stats["errors"] == 1 and isinstance(errors[0], ValueError)
    p.submit(1)
    time.sleep(0.1)
    p.submit(2)
    time.sleep(0.1)
    assert p.discard_pending() == 1 and p.stats["discarded"] == 1
    release.set()
    p.close()
    assert not p.alive and p.submit(3) is False and p.stats["dropped_closed"] == 1


def test_parallel_decode_only_when_measured_to_pay() -> None:
    """No pool: always sequential. Small frames (< min_frame_s): never the pool, however slow the pool looks.
    Slow frames: the pool is tried, kept while faster, left when slower; the unused mode is re-measured on probes."""
    off = ParallelDecodePolicy(enabled=False)
    off.record(False, 1.0, 10)
    assert not off.use_pool()

    p = ParallelDecodePolicy(enabled=True, min_frame_s=2e-3, probe_every=10, alpha=1.0)
    assert not p.use_pool()  # nothing measured yet: sequential first
    p.record(False, 10 * 0.15e-3, 10)  # 64 px JPEGs: 0.15 ms per frame
    assert [p.use_pool() for _ in range(5)] == [False] * 5

    p.record(False, 10 * 5e-3, 10)  # large frames: 5 ms each in turn
    assert p.use_pool()  # try the pool
    p.record(True, 10 * 2e-3, 10)  # 2 ms per frame on the pool: faster, kept
    choices = []
    for _ in range(20):
        c = p.use_pool()
        choices.append(c)
        p.record(c, 10 * (2e-3 if c else 5e-3), 10)
    assert choices.count(False) == 2 and sum(choices) == 18  # one sequential probe per 10 bundles

    for _ in range(3):  # the pool turns slow (GIL contention on a loaded machine): back to sequential
        c = p.use_pool()
        p.record(c, 10 * (9e-3 if c else 5e-3), 10)
    assert not p.use_pool()
    assert p.parallel_bundles >= 19 and p.bundles == 26
