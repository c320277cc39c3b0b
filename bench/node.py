"""Benchmark localize_node end to end over loopback DDS: latency and max sustained bundle rate, split by stage.

    .venv/bin/python bench/node.py                        # 4 and 10 cameras, raw, tiny model, CPU
    .venv/bin/python bench/node.py --cameras 10 --transport compressed --device cuda --preset demo

What is measured (wall clock, one process, the node on the executor `localize_node` builds for
``executor_threads`` — 1 = SingleThreadedExecutor, the default, N > 1 = MultiThreadedExecutor; both are run):
* latency: a publisher sends one bundle at a time (paced, so nothing queues) and times last image publish →
  PoseStamped received by a subscriber; the node's own decode / sync / inference / publish times are its stats.
* sustained: the baseline is `Localizer.infer` alone on the same images in the same run; bundles are then
  published paced at 25/50/75/100 % of that rate for --seconds each, and the max sustained rate is the highest
  pose rate that keeps >= 95 % of the offered bundles (ratio to the baseline = how much of the model's throughput
  survives DDS + decode + sync + publish). Stale bundles (latest-wins) and synchronizer drops are counted.
DDS stays on this machine (localhost-only discovery, a random domain id).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mfapr_ros.ros.env import apply_localhost_env

apply_localhost_env()


def make_checkpoint(folder: Path, num_cameras: int, size: int, preset_name: str) -> Path:
    import torch

    from mfapr_ros.core.checkpoint import save_checkpoint
    from mfapr_ros.core.preprocess import PreprocessConfig
    from mfapr_ros.core.rig import ring_rig
    from mfapr_ros.models import build_model, model_meta, preset

    torch.manual_seed(0)
    model = build_model(preset(preset_name, num_cameras=num_cameras, image_size=size))
    rig = ring_rig(num_cameras, image_size=size, hfov_deg=90.0)
    meta = model_meta(model, rig, PreprocessConfig(resize=size, crop=size), {"bench": "bench/node.py"})
    return save_checkpoint(folder / f"bench{num_cameras}", model, meta)


def _pct(v: list[float], p: float) -> float:
    return float(np.percentile(np.array(v), p)) * 1e3 if v else float("nan")


STAMP_STEP_NS = 33_333_333  # consecutive bundles are stamped 30 Hz apart, whatever rate they are published at


@dataclass
class _Harness:
    """The running graph of one :func:`run`: the node under test, the tester's per-camera publishers, the
    received-pose log ``{stamp_ns: perf_counter at arrival}`` and the next bundle stamp."""

    node: Any
    pubs: list[Any]
    recv: dict[int, float]
    msgs: Callable[[int], list[Any]]
    stamp: int = 10**12

    def publish(self) -> int:
        """Publish one bundle (every camera) stamped ``self.stamp``; returns that stamp (the caller advances it)."""
        for p, m in zip(self.pubs, self.msgs(self.stamp), strict=True):
            p.publish(m)
        return self.stamp


def _inputs(num_cameras: int, size: int) -> tuple[list[np.ndarray], list[bytes]]:
    """Seeded random images (raw) and their JPEGs (compressed transport): the same bundle every run."""
    import torch
    from torchvision.io import encode_jpeg

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(num_cameras)]
    jpegs = [bytes(encode_jpeg(torch.from_numpy(im).permute(2, 0, 1)).numpy().tobytes()) for im in imgs]
    return imgs, jpegs


@contextlib.contextmanager
def _graph(ckpt: Path, device: str, transport: str, threads: int, imgs: list[np.ndarray],
           jpegs: list[bytes]) -> Iterator[_Harness]:
    """A private rclpy context with the LocalizeNode under test and a tester node (image publishers, pose
    subscriber) spun on the executor ``localize_node`` builds for ``threads``; torn down on exit, error or not.

    ``LocalizeNode`` is looked up here, at call time, so ``bench/gpu_suite.py`` can patch in extra parameters."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CompressedImage, Image

    from mfapr_ros.ros import convert as rc
    from mfapr_ros.ros.localize_node import LocalizeNode
    from mfapr_ros.ros.runtime import make_executor

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    node = LocalizeNode("bench_loc", context=ctx, parameter_overrides=[
        Parameter("checkpoint", value=str(ckpt)), Parameter("device", value=device),
        Parameter("default_transport", value=transport), Parameter("diagnostics_period", value=0.0),
        Parameter("sync.queue_size", value=3)])
    tester = rclpy.create_node("bench_tester", context=ctx)
    recv: dict[int, float] = {}
    tester.create_subscription(PoseStamped, "/bench_loc/pose",
                               lambda m: recv.setdefault(rc.time_to_ns(m.header.stamp), time.perf_counter()), 100)
    mtype = CompressedImage if transport == "compressed" else Image
    pubs = [tester.create_publisher(mtype, b.topic, qos_profile_sensor_data) for b in node.bindings]
    ex = make_executor(threads, context=ctx)
    ex.add_node(node)
    ex.add_node(tester)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()

    def msgs(stamp: int) -> list[Any]:
        if transport == "compressed":
            return [rc.encoded_to_compressed_msg(j, "jpeg", stamp) for j in jpegs]
        return [rc.numpy_to_image_msg(im, "rgb8", stamp) for im in imgs]

    try:
        yield _Harness(node=node, pubs=pubs, recv=recv, msgs=msgs)
    finally:
        ex.shutdown()
        node.destroy_node()
        tester.destroy_node()
        rclpy.shutdown(context=ctx)
        spin.join(5)


def _wait_for_discovery(h: _Harness, timeout_s: float = 30.0) -> None:
    """Block until every image topic and the pose topic are matched: a bundle published earlier would be lost."""
    deadline = time.monotonic() + timeout_s
    while not all(p.get_subscription_count() for p in h.pubs) or h.node.pub_pose.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("DDS discovery did not complete in 30 s")
        time.sleep(0.05)


def _warm_up(h: _Harness, bundles: int = 5) -> None:
    """A few bundles first (allocations, first inference), so the latency samples see the steady state."""
    for _ in range(bundles):
        h.publish()
        h.stamp += STAMP_STEP_NS
        time.sleep(0.1)
    time.sleep(0.5)


def _measure_latency(h: _Harness, samples: int) -> list[float]:
    """End-to-end seconds (last image published → pose received) with one bundle in flight at a time, so nothing
    queues; a bundle without a pose within 2 s is left out (``lat_n`` in the result says how many arrived)."""
    sent: dict[int, float] = {}
    for _ in range(samples):
        stamp = h.publish()
        sent[stamp] = time.perf_counter()
        t_wait = time.monotonic() + 2.0
        while stamp not in h.recv and time.monotonic() < t_wait:
            time.sleep(0.0005)
        h.stamp += STAMP_STEP_NS
    return [h.recv[s] - t for s, t in sent.items() if s in h.recv]


def _stage_times(node: Any) -> dict[str, list[float]]:
    """The node's own per-stage timings (seconds) so far: taken right after the latency phase, before the sweep."""
    return {"decode": list(node.decode_time._v), "sync": list(node.sync_time._v),
            "inference": list(node.latency._v), "publish": list(node.publish_time._v)}


def _model_only_rate(node: Any, imgs: list[np.ndarray], stamp: int, seconds: float = 2.0) -> float:
    """Bundles/s of ``Localizer.infer`` alone on the same images in the same process: the ceiling the sweep's
    rates are fractions of."""
    decoded = [np.asarray(im) for im in imgs]
    loc = node.localizer
    t_b = time.perf_counter()
    nb = 0
    while time.perf_counter() - t_b < seconds:
        loc.infer(decoded, stamp)
        nb += 1
    return nb / (time.perf_counter() - t_b)


def _sweep_step(h: _Harness, target: float, seconds: float) -> dict[str, Any]:
    """Publish paced at ``target`` bundles/s for ``seconds``; measured offered and pose rates, plus the stale
    (latest-wins) and synchronizer drops counted by the node during the step."""
    n0 = len(h.recv)
    s0 = h.node.diagnostics_summary()
    t_start = time.perf_counter()
    sent_n = 0
    while time.perf_counter() - t_start < seconds:
        h.publish()
        h.stamp += STAMP_STEP_NS
        sent_n += 1
        nxt = t_start + sent_n / target
        while time.perf_counter() < nxt:
            time.sleep(0.0005)
    elapsed = time.perf_counter() - t_start
    time.sleep(0.3)  # let the last poses arrive before counting
    s1 = h.node.diagnostics_summary()
    return {"offered": sent_n / elapsed, "poses": (len(h.recv) - n0) / elapsed,
            "stale": s1["drops"]["inference.stale"] - s0["drops"]["inference.stale"],
            "sync_drops": sum(v - s0["drops"].get(k, 0) for k, v in s1["drops"].items() if k.startswith("sync."))}


def run(num_cameras: int, size: int, transport: str, seconds: float, device: str, preset_name: str,
        latency_samples: int, threads: int = 1,
        fractions: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)) -> dict[str, Any]:
    """One configuration end to end: latency, model-only rate, then the paced sweep at ``fractions`` of it.

    The checkpoint lives in a temporary folder removed when the run ends (after the node is torn down)."""
    imgs, jpegs = _inputs(num_cameras, size)
    with tempfile.TemporaryDirectory(prefix="mfapr_bench_node_") as tmp:
        ckpt = make_checkpoint(Path(tmp), num_cameras, size, preset_name)
        with _graph(ckpt, device, transport, threads, imgs, jpegs) as h:
            _wait_for_discovery(h)
            _warm_up(h)
            lat = _measure_latency(h, latency_samples)
            stage = _stage_times(h.node)
            base_rate = _model_only_rate(h.node, imgs, h.stamp)
            sweep = [_sweep_step(h, base_rate * frac, seconds) for frac in fractions]
    return {
        "cameras": num_cameras, "threads": threads, "lat_n": len(lat),
        "e2e_p50": _pct(lat, 50), "e2e_p99": _pct(lat, 99),
        **{f"{k}_p50": _pct(v, 50) for k, v in stage.items()}, **{f"{k}_p99": _pct(v, 99) for k, v in stage.items()},
        "baseline_hz": base_rate, "sweep": sweep,
        "sustained_hz": max([w["poses"] for w in sweep if w["poses"] >= 0.95 * w["offered"]], default=0.0),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[4, 10])
    ap.add_argument("--size", type=int, default=64, help="image size in px (published and model input)")
    ap.add_argument("--transport", choices=("raw", "compressed"), default="raw")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each sustained-rate step")
    ap.add_argument("--latency-samples", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="tiny", help="model preset (tiny, demo, transposenet, ...)")
    ap.add_argument("--executor-threads", type=int, nargs="+", default=[1, 4],
                    help="executor_threads values to compare (1 = single-threaded, the node's default)")
    args = ap.parse_args(argv)
    import torch

    print(f"# bench/node.py  preset={args.preset} size={args.size}px transport={args.transport} "
          f"device={args.device} torch_threads={torch.get_num_threads()} OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', '-')}")
    rows = [run(n, args.size, args.transport, args.seconds, args.device, args.preset, args.latency_samples, th)
            for n in args.cameras for th in args.executor_threads]
    print("\nlatency, one bundle in flight (ms)      p50      p99")
    for r in rows:
        print(f"  N={r['cameras']:<3} threads={r['threads']} end-to-end (n={r['lat_n']:<3}) "
              f"{r['e2e_p50']:7.2f}  {r['e2e_p99']:7.2f}")
        for k in ("decode", "sync", "inference", "publish"):
            per = " (per image)" if k in ("decode", "sync") else ""
            print(f"        {k + per:<30}{r[k + '_p50']:7.2f}  {r[k + '_p99']:7.2f}")
    print("\nsustained, paced at fractions of the model-only rate (bundles/s)")
    print("          offered   poses/s  kept   stale  sync drops")
    for r in rows:
        print(f"  N={r['cameras']:<3} threads={r['threads']} model alone (Localizer.infer): {r['baseline_hz']:.1f}/s")
        for w in r["sweep"]:
            print(f"        {w['offered']:9.1f} {w['poses']:9.1f}  {w['poses'] / w['offered']:5.2f}  {w['stale']:5d}  "
                  f"{w['sync_drops']:10d}")
        print(f"        max sustained (>= 95 % kept): {r['sustained_hz']:.1f}/s = "
              f"{r['sustained_hz'] / r['baseline_hz']:.2f} x the model-only rate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
