"""core.bundle_pipeline (issue 25): a bounded wait queue before any decode (latest wins at depth 1), decode one
bundle ahead of the model, publish on a thread of its own while the model runs the next bundle, every submitted
bundle accounted for, bounded slots."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from mfapr_ros.core.bundle_pipeline import BundlePipeline, StageTimes


def _wait(pred: Any, timeout: float = 5.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def _accounted(stats: dict[str, int]) -> int:
    """Every submitted bundle ends in exactly one of these (once the pipeline is idle or closed)."""
    return (stats["processed"] + stats["stale_dropped"] + stats["rejected"] + stats["errors"] + stats["discarded"]
            + stats["dropped_closed"])


class _Gated:
    """prepare / infer / on_result that record what they saw and block on a gate when told to."""

    def __init__(self) -> None:
        self.prepared: list[int] = []
        self.inferred: list[int] = []
        self.published: list[int] = []
        self.gates = {k: threading.Event() for k in ("prepare", "infer", "publish")}
        for g in self.gates.values():
            g.set()
        self.threads: dict[str, str] = {}

    def prepare(self, item: int) -> tuple[Any, int] | None:
        self.threads["prepare"] = threading.current_thread().name
        self.prepared.append(item)
        assert self.gates["prepare"].wait(10)
        if item < 0:
            return None  # rejected (a bad-frame bundle)
        if item == 666:
            raise ValueError("decode failed")
        return [item], item

    def infer(self, images: list[int], stamp: int) -> int:
        self.threads["infer"] = threading.current_thread().name
        self.inferred.append(stamp)
        assert self.gates["infer"].wait(10)
        if stamp == 777:
            raise RuntimeError("model failed")
        return stamp

    def on_result(self, result: int, times: StageTimes) -> None:
        self.threads["publish"] = threading.current_thread().name
        assert times.total_s >= times.inference_s >= 0.0
        assert self.gates["publish"].wait(10)
        self.published.append(result)


def test_latest_wins_one_ahead_and_threads() -> None:
    g = _Gated()
    with BundlePipeline(g.prepare, g.infer, g.on_result, name="t1") as p:
        g.gates["infer"].clear()
        p.submit(1)
        _wait(lambda: g.inferred == [1], what="bundle 1 in the model")
        p.submit(2)  # decoded while 1 is in the model (one ahead)
        _wait(lambda: g.prepared == [1, 2], what="bundle 2 decoded during 1's inference")
        for k in (3, 4, 5):  # the decoded slot is full: these wait, and each replaces the previous one
            p.submit(k)
        time.sleep(0.05)
        assert g.prepared == [1, 2]  # 3 and 4 superseded before any decode
        g.gates["infer"].set()
        assert p.wait_idle(5)
        assert g.published == [1, 2, 5]
        s = p.stats
        assert s["submitted"] == 5 and s["processed"] == 3 and s["stale_dropped"] == 2
        assert _accounted(s) == s["submitted"]
    assert g.threads == {"prepare": "t1-decode", "infer": "t1-inference", "publish": "t1-publish"}


def test_deeper_queue_keeps_the_newest_in_arrival_order_and_supersedes_the_oldest() -> None:
    """``depth`` 2 (the node's default): two bundles wait, oldest first; a third supersedes the oldest waiting one
    (counted stale), so a model that is late once loses nothing, and overload still keeps the newest."""
    g = _Gated()
    with BundlePipeline(g.prepare, g.infer, g.on_result, name="tq", depth=2) as p:
        g.gates["infer"].clear()
        p.submit(1)
        _wait(lambda: g.inferred == [1], what="bundle 1 in the model")
        p.submit(2)
        _wait(lambda: g.prepared == [1, 2], what="bundle 2 decoded during 1's inference")
        p.submit(3)
        p.submit(4)  # the decoded slot is full: 3 and 4 wait, both kept
        time.sleep(0.05)
        assert p.stats["stale_dropped"] == 0 and g.prepared == [1, 2]
        p.submit(5)  # the queue is full: 3 (the oldest waiting) is superseded
        p.submit(6)  # and then 4
        assert p.stats["stale_dropped"] == 2
        g.gates["infer"].set()
        assert p.wait_idle(5)
        assert g.published == [1, 2, 5, 6]  # arrival order, the newest kept
        s = p.stats
        assert s["submitted"] == 6 and s["processed"] == 4 and _accounted(s) == 6
    with pytest.raises(ValueError, match="depth must be >= 1"):
        BundlePipeline(g.prepare, g.infer, g.on_result, depth=0)


def test_publish_overlaps_the_next_inference_with_bounded_back_pressure() -> None:
    """While a result is being published the model runs the next bundle; a result never overtakes or replaces
    one still waiting to be published (the inference thread waits: nothing computed is dropped)."""
    g = _Gated()
    with BundlePipeline(g.prepare, g.infer, g.on_result, name="t2") as p:
        g.gates["publish"].clear()
        p.submit(1)
        _wait(lambda: g.inferred == [1], what="bundle 1 inferred")
        p.submit(2)
        _wait(lambda: g.inferred == [1, 2], what="bundle 2 inferred while 1 is being published")
        p.submit(3)
        _wait(lambda: g.inferred == [1, 2, 3], what="bundle 3 inferred (2 waits to be published)")
        p.submit(4)
        _wait(lambda: g.prepared == [1, 2, 3, 4], what="bundle 4 decoded")
        time.sleep(0.05)
        # 1 is being published, 2 waits in the result slot, 3's result is held by the inference thread: 4 waits
        assert g.inferred == [1, 2, 3] and g.published == []
        assert not p.wait_idle(0.01)
        g.gates["publish"].set()
        assert p.wait_idle(5)
        assert g.published == [1, 2, 3, 4]
        assert _accounted(p.stats) == p.stats["submitted"] == 4


def test_rejects_errors_and_callback_errors_are_counted() -> None:
    g = _Gated()
    errors: list[BaseException] = []
    failing = {"n": 0}

    def on_result(result: int, times: StageTimes) -> None:
        if result == 3:
            failing["n"] += 1
            raise KeyError("publish failed")
        g.on_result(result, times)

    with BundlePipeline(g.prepare, g.infer, on_result, on_error=errors.append, name="t3") as p:
        for k in (-1, 666, 777, 3, 4):
            p.submit(k)
            assert p.wait_idle(5)
        s = p.stats
        assert g.published == [4] and failing["n"] == 1
        # a prepare that raised is one error, not also a rejected bundle; a failed publish was still processed
        assert (s["rejected"], s["errors"], s["callback_errors"], s["processed"]) == (1, 2, 1, 2)
        assert _accounted(s) == s["submitted"] == 5
        assert [type(e) for e in errors] == [ValueError, RuntimeError, KeyError]
        assert p.alive


def test_discard_and_close_account_for_everything() -> None:
    g = _Gated()
    p = BundlePipeline(g.prepare, g.infer, g.on_result, name="t4")
    g.gates["infer"].clear()
    p.submit(1)
    _wait(lambda: g.inferred == [1], what="bundle 1 in the model")
    p.submit(2)
    _wait(lambda: g.prepared == [1, 2], what="bundle 2 decoded")
    p.submit(3)
    assert p.discard_pending() == 2  # 2 (decoded) and 3 (waiting) dropped, 1 finishes and is published
    p.submit(4)
    _wait(lambda: g.prepared == [1, 2, 4], what="bundle 4 decoded")
    closer = threading.Thread(target=p.close)
    closer.start()
    time.sleep(0.05)
    g.gates["infer"].set()
    closer.join(5)
    assert not closer.is_alive() and not p.alive
    s = p.stats
    assert g.published == [1] and s["discarded"] == 2 and s["dropped_closed"] == 1
    assert _accounted(s) == s["submitted"] == 4
    assert not p.submit(5) and p.stats["dropped_closed"] == 2


def test_discard_drops_the_bundle_being_decoded_too() -> None:
    """A deactivate while a bundle is being decoded: it is counted ``discarded`` at once (twice asking counts it
    once) and never reaches the model; the next bundle goes through as usual. Before, it was decoded into the
    model's slot after the discard and published after the deactivate."""
    g = _Gated()
    p = BundlePipeline(g.prepare, g.infer, g.on_result, name="t4b")
    g.gates["prepare"].clear()
    p.submit(1)
    _wait(lambda: g.prepared == [1], what="bundle 1 in its decode")
    assert p.discard_pending() == 1 and p.stats["discarded"] == 1
    assert p.discard_pending() == 0 and p.stats["discarded"] == 1
    g.gates["prepare"].set()
    assert p.wait_idle(5)
    assert g.inferred == [] and g.published == []
    p.submit(2)
    assert p.wait_idle(5) and g.published == [2]
    s = p.stats
    assert s["discarded"] == 1 and s["processed"] == 1 and _accounted(s) == s["submitted"] == 2
    p.close()


@pytest.mark.parametrize("slow", ["prepare", "infer", "publish"])
def test_flood_keeps_slots_bounded_and_the_accounting_exact(slow: str) -> None:
    """Many submissions against one slow stage: nothing queues beyond the slots, every bundle is accounted for."""
    done: list[int] = []

    def prepare(item: int) -> tuple[Any, int]:
        if slow == "prepare":
            time.sleep(0.002)
        return [item], item

    def infer(images: list[int], stamp: int) -> int:
        if slow == "infer":
            time.sleep(0.002)
        return stamp

    def on_result(result: int, times: StageTimes) -> None:
        if slow == "publish":
            time.sleep(0.002)
        done.append(result)

    with BundlePipeline(prepare, infer, on_result, name="t5") as p:
        for k in range(400):
            p.submit(k)
            if k % 50 == 0:
                time.sleep(0.003)
        assert p.wait_idle(10)
        s = p.stats
    assert _accounted(s) == s["submitted"] == 400
    assert done == sorted(done) and done[-1] == 399 and s["stale_dropped"] > 0  # in order; the newest always wins


class _CountingCondition(threading.Condition):
    """A Condition that counts, per thread name, how often a wait() returned (each return = one wake-up)."""

    returns: dict[str, int] = {}

    def wait(self, timeout: float | None = None) -> bool:
        out = super().wait(timeout)
        name = threading.current_thread().name
        _CountingCondition.returns[name] = _CountingCondition.returns.get(name, 0) + 1
        return out


def test_a_state_change_wakes_only_the_thread_that_can_act(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bundles arriving while the model is busy wake the prepare thread only; each result wakes the publish
    thread once (a shared notify_all woke all three workers at every change: GIL hand-overs for nothing)."""
    monkeypatch.setattr(threading, "Condition", _CountingCondition)
    _CountingCondition.returns = {}
    g = _Gated()
    p = BundlePipeline(g.prepare, g.infer, g.on_result, name="wake")
    monkeypatch.undo()
    try:
        g.gates["infer"].clear()
        p.submit(1)
        _wait(lambda: g.inferred == [1], what="bundle 1 in the model")
        before = dict(_CountingCondition.returns)
        for k in range(2, 42):  # 40 bundles while the model is blocked: one is decoded, the newest waits
            p.submit(k)
        _wait(lambda: len(g.prepared) == 2, what="one bundle decoded ahead")
        time.sleep(0.05)
        assert p.stats["stale_dropped"] >= 38  # all but the decoded one and the newest were replaced waiting
        woke = {k: v - before.get(k, 0) for k, v in _CountingCondition.returns.items()}
        assert woke.get("wake-inference", 0) == 0 and woke.get("wake-publish", 0) == 0, woke
        assert woke.get("wake-decode", 0) <= 2, woke  # bundle 2 decoded, then it waits for the model
        g.gates["infer"].set()
        assert p.wait_idle(5)
        assert g.published[0] == 1 and g.published[-1] == 41 and _accounted(p.stats) == 41
        woke = {k: v - before.get(k, 0) for k, v in _CountingCondition.returns.items()}
        assert woke.get("wake-publish", 0) <= 2 and woke.get("wake-inference", 0) <= 3, woke
    finally:
        p.close()
