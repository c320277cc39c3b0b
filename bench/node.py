"""Benchmark localize_node end to end over loopback DDS: latency, throughput vs offered load, memory under overload.

    .venv/bin/python bench/node.py --quick                # 10 compressed cameras, demo model, CPU, ~1 min
    .venv/bin/python bench/node.py --cameras 10 --transport compressed --preset demo          # + a 60 s overload
    .venv/bin/python bench/node.py --cameras 10 --transport compressed --device cuda --preset demo

What is measured (wall clock; the node runs in this process on the executor ``localize_node`` builds for
``executor_threads`` — 1 = SingleThreadedExecutor, the default, N > 1 = MultiThreadedExecutor; both are run):

* the cameras are a separate process (as on a robot: drivers are other processes) publishing pre-serialized
  messages, and the pose listener lives in that process too (as a consumer would: robot_localization, nav2), so
  neither the publishers' nor the listener's Python work shares the node's GIL or counts as node overhead;
* latency: one bundle at a time (paced, so nothing queues): last image published → PoseStamped received, and the
  node's own time per stage (sync per message; wait, decode, inference per bundle; publish per pose);
* model alone: ``Localizer.infer`` on the decoded images in this process, same run — the ceiling every rate is a
  fraction of (ratios measured in the same run stay meaningful on a loaded machine);
* throughput vs offered load: bundles published paced at 25 % … 200 % of the model-only rate for ``--seconds``
  each; poses/s, kept share, superseded (``inference.stale``) and synchronizer drops per step. The
  curve must be flat above the model rate, not falling. Max sustained = the highest pose rate keeping >= 95 % of
  the offered bundles;
* overload: ``--overload-seconds`` at 2x the model rate, RSS of this process sampled every second (first vs last
  quarter: flat means no queue grows).

DDS stays on this machine (localhost-only discovery; ROS_DOMAIN_ID as set, else a random one).
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import multiprocessing as mp
import os
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mfapr_ros.ros.env import apply_localhost_env

apply_localhost_env()

STAMP_STEP_NS = 33_333_333  # consecutive bundles are stamped 30 Hz apart, whatever rate they are published at
#: offered load, as fractions of the model-only rate: fine steps around 0.8-1.0, where "max sustained" is decided
#: (with 0.75 → 1.0 only, a node sustaining 0.9x read as 0.75x), then the overload up to 2x
FRACTIONS = (0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.5, 2.0)


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


def _inputs(num_cameras: int, size: int) -> tuple[list[np.ndarray], list[bytes]]:
    """Seeded random images (raw) and their JPEGs (compressed transport): the same bundle every run."""
    import torch
    from torchvision.io import encode_jpeg

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(num_cameras)]
    jpegs = [bytes(encode_jpeg(torch.from_numpy(im).permute(2, 0, 1)).numpy().tobytes()) for im in imgs]
    return imgs, jpegs


def rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# ---------------------------------------------------------------------------- the camera process
@dataclass(frozen=True)
class CameraTiming:
    """How the paced cameras publish (``--cameras-timing``). ``ideal``: every camera at the bundle's instant with
    the same stamp. ``realistic`` (what a rig's drivers do): each camera's stamp carries a fixed offset (uniform in
    ±``offset_s``, inside the synchronizer's 20 ms slop), each message leaves after a heavy-tailed delay (Pareto,
    shape 1.5, scale ``jitter_frac`` of the bundle period, capped at 0.9 period so a camera never reorders its own
    frames), and each frame is lost with probability ``loss`` (a driver hiccup): such a bundle cannot be complete,
    so "kept" is measured against the complete bundles offered."""

    realistic: bool = False
    offset_s: float = 0.005
    jitter_frac: float = 0.05
    loss: float = 0.002
    seed: int = 0


def _camera_process(conn: Any, topics: list[str], transport: str, imgs: list[np.ndarray], jpegs: list[bytes],
                    domain: str, pose_topic: str, timing: CameraTiming | None = None) -> None:
    """The cameras: one publisher per topic, messages serialized once; each publish patches the header stamp in the
    CDR bytes (offset 4: int32 sec, uint32 nanosec). The pose listener: ``{stamp_ns: perf_counter at arrival}`` of
    every PoseStamped on ``pose_topic``, spun on a thread here. Commands arrive on ``conn`` (see :class:`_Cameras`);
    ``timing`` shapes the paced publishing (:class:`CameraTiming`)."""
    os.environ["ROS_DOMAIN_ID"] = domain
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CompressedImage, Image

    from mfapr_ros.ros import convert as rc

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("bench_cameras", context=ctx)
    mtype = CompressedImage if transport == "compressed" else Image
    pubs = [node.create_publisher(mtype, t, qos_profile_sensor_data) for t in topics]
    msgs = ([rc.encoded_to_compressed_msg(j, "jpeg", 0) for j in jpegs] if transport == "compressed"
            else [rc.numpy_to_image_msg(im, "rgb8", 0) for im in imgs])
    blobs = [bytearray(serialize_message(m)) for m in msgs]
    recv: dict[int, float] = {}
    listener = node.create_subscription(
        PoseStamped, pose_topic, lambda m: recv.setdefault(rc.time_to_ns(m.header.stamp), time.perf_counter()), 100)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()

    def publish(stamp: int) -> None:
        sec, nsec = divmod(stamp, 1_000_000_000)
        for p, b in zip(pubs, blobs, strict=True):
            struct.pack_into("<iI", b, 4, sec, nsec)
            p.publish(bytes(b))

    def publish_one(cam: int, stamp: int) -> None:
        struct.pack_into("<iI", blobs[cam], 4, *divmod(stamp, 1_000_000_000))
        pubs[cam].publish(bytes(blobs[cam]))

    timing = timing or CameraTiming()
    rng = np.random.default_rng(timing.seed)
    offsets_ns = (rng.uniform(-timing.offset_s, timing.offset_s, len(pubs)) * 1e9).astype(np.int64)

    def paced_realistic(rate: float, seconds: float, stamp: int) -> tuple[int, int]:
        """Bundles at ``rate`` for ``seconds``, each camera's frame offset, delayed and sometimes lost
        (:class:`CameraTiming`); returns (bundles offered, complete bundles offered)."""
        period = 1.0 / rate
        events: list[tuple[float, int, int]] = []  # (publish time, camera, stamp)
        t0 = time.perf_counter()
        n = complete = 0
        while True:
            now = time.perf_counter()
            if now - t0 < seconds and t0 + n * period <= now:  # the next bundle is due: schedule its frames
                base = t0 + n * period
                delays = np.minimum(timing.jitter_frac * period * (rng.pareto(1.5, len(pubs)) + 1.0), 0.9 * period)
                lost = rng.random(len(pubs)) < timing.loss
                complete += not lost.any()
                for cam in np.flatnonzero(~lost):
                    heapq.heappush(events, (base + float(delays[cam]), int(cam),
                                            stamp + n * STAMP_STEP_NS + int(offsets_ns[cam])))
                n += 1
                continue
            while events and events[0][0] <= now:
                _, cam, st = heapq.heappop(events)
                publish_one(cam, st)
            if not events and now - t0 >= seconds:
                return n, complete
            nxt = min(events[0][0] if events else float("inf"), t0 + n * period if now - t0 < seconds
                      else float("inf"))
            if (left := nxt - time.perf_counter()) > 0:
                time.sleep(min(left, 0.001))

    try:
        while True:
            cmd = conn.recv()
            if cmd[0] == "stop":
                break
            if cmd[0] == "match":
                deadline = time.monotonic() + cmd[1]
                def matched() -> bool:
                    return all(p.get_subscription_count() for p in pubs) and listener.get_publisher_count() > 0

                while not matched() and time.monotonic() < deadline:
                    time.sleep(0.05)
                conn.send(matched())
            elif cmd[0] == "one":  # one bundle; wait up to 2 s for its pose: (sent, received or None)
                publish(cmd[1])
                t_sent = time.perf_counter()  # the last image published
                t_wait = time.monotonic() + 2.0
                while cmd[1] not in recv and time.monotonic() < t_wait:
                    time.sleep(0.0005)
                conn.send((t_sent, recv.get(cmd[1])))
            elif cmd[0] == "count":
                conn.send(len(recv))
            elif cmd[0] == "paced":
                _, rate, seconds, stamp = cmd
                t0, cpu0 = time.perf_counter(), time.process_time()
                if timing.realistic:
                    n, complete = paced_realistic(rate, seconds, stamp)
                else:
                    n = 0
                    while time.perf_counter() - t0 < seconds:
                        publish(stamp + n * STAMP_STEP_NS)
                        n += 1
                        nxt = t0 + n / rate
                        while (left := nxt - time.perf_counter()) > 0:
                            time.sleep(min(left, 0.001))
                    complete = n
                # this process's CPU seconds too: on a small machine the cameras' publishing competes with the node
                conn.send((n, complete, time.perf_counter() - t0, time.process_time() - cpu0))
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        spinner.join(5)


class _Cameras:
    """The camera process and its command pipe."""

    def __init__(self, topics: list[str], transport: str, imgs: list[np.ndarray], jpegs: list[bytes],
                 pose_topic: str, timing: CameraTiming | None = None) -> None:
        spawn = mp.get_context("spawn")
        self.conn, child = spawn.Pipe()
        self.proc = spawn.Process(target=_camera_process, daemon=True,
                                  args=(child, topics, transport, imgs, jpegs, os.environ["ROS_DOMAIN_ID"], pose_topic,
                                        timing))
        self.proc.start()

    def call(self, *cmd: Any) -> Any:
        self.conn.send(cmd)
        return self.conn.recv()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send(("stop",))
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


# ---------------------------------------------------------------------------- the node under test
@dataclass
class _Harness:
    """The running graph of one :func:`run`: the node under test, the camera process (cameras + pose listener) and
    the next bundle stamp."""

    node: Any
    cameras: _Cameras
    stamp: int = 10**12


@contextlib.contextmanager
def _graph(ckpt: Path, device: str, transport: str, threads: int, imgs: list[np.ndarray],
           jpegs: list[bytes], torchscript: bool = True, queue_depth: int | None = None,
           timing: CameraTiming | None = None) -> Iterator[_Harness]:
    """A private rclpy context with the LocalizeNode under test, spun on the executor ``localize_node`` builds for
    ``threads``, plus the camera process (which also listens to the poses); torn down on exit, error or not.

    ``LocalizeNode`` is looked up here, at call time, so ``bench/gpu_suite.py`` can patch in extra parameters.
    ``queue_depth`` None = the node's default ``bundle_queue_depth``."""
    import rclpy
    from rclpy.parameter import Parameter

    from mfapr_ros.ros.localize_node import LocalizeNode
    from mfapr_ros.ros.runtime import make_executor

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    node = LocalizeNode("bench_loc", context=ctx, parameter_overrides=[
        Parameter("checkpoint", value=str(ckpt)), Parameter("device", value=device),
        Parameter("default_transport", value=transport), Parameter("diagnostics_period", value=0.0),
        Parameter("executor_threads", value=threads), Parameter("sync.queue_size", value=3),
        Parameter("torchscript", value=torchscript),
        *([Parameter("bundle_queue_depth", value=queue_depth)] if queue_depth is not None else [])])
    ex = make_executor(threads, context=ctx)
    ex.add_node(node)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    cams = _Cameras([b.topic for b in node.bindings], transport, imgs, jpegs, "/bench_loc/pose", timing)
    try:
        yield _Harness(node=node, cameras=cams)
    finally:
        cams.close()
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        spin.join(5)


def _wait_for_discovery(h: _Harness, timeout_s: float = 30.0) -> None:
    """Block until every image topic and the pose topic are matched: a bundle published earlier would be lost."""
    if not h.cameras.call("match", timeout_s):
        raise RuntimeError(f"DDS discovery of the camera and pose topics did not complete in {timeout_s:.0f} s")


def _one(h: _Harness) -> float | None:
    """One bundle; its end-to-end seconds, or None when no pose came within 2 s."""
    t_sent, t_recv = h.cameras.call("one", h.stamp)
    h.stamp += STAMP_STEP_NS
    return None if t_recv is None else t_recv - t_sent


def _warm_up(h: _Harness, bundles: int = 5) -> None:
    """A few bundles first (allocations, first inference), so the latency samples see the steady state."""
    for _ in range(bundles):
        _one(h)
        time.sleep(0.1)
    time.sleep(0.5)


def _measure_latency(h: _Harness, samples: int) -> list[float]:
    """End-to-end seconds (last image published → pose received) with one bundle in flight at a time, so nothing
    queues; a bundle without a pose within 2 s is left out (``lat_n`` in the result says how many arrived)."""
    return [dt for dt in (_one(h) for _ in range(samples)) if dt is not None]


def _stage_times(node: Any) -> dict[str, list[float]]:
    """The node's own per-stage timings (seconds) so far, taken right after the latency phase."""
    return {k: list(v._v) for k, v in node.stage_time.items()}


def _model_only_rate(node: Any, imgs: list[np.ndarray], stamp: int, seconds: float = 2.0,
                     times: list[float] | None = None) -> float:
    """Bundles/s of ``Localizer.infer`` alone on the same images in the same process (node idle): the ceiling the
    sweep's rates are fractions of. It is the node's own Localizer, so the same inference path (TorchScript graph
    or eager, ``--torchscript``) as the node's: a fair ratio. With ``times``, each call's seconds are appended to
    it (the model's own p99/p50 on this machine: the floor under the node's end-to-end spread)."""
    decoded = [np.asarray(im) for im in imgs]
    loc = node.localizer
    t_b = time.perf_counter()
    nb = 0
    while (t := time.perf_counter()) - t_b < seconds:
        loc.infer(decoded, stamp)
        nb += 1
        if times is not None:
            times.append(time.perf_counter() - t)
    return nb / (time.perf_counter() - t_b)


def thread_cpu_s() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process so far, by native thread id (Linux /proc)."""
    out: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def machine_busy_s() -> float:
    """CPU seconds all processes of the machine have used so far (Linux /proc/stat, idle and iowait excluded)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def _thread_names() -> dict[int, str]:
    """Python thread names by native id; the node's threads carry its name (``bench_loc-intake``, ``-decode``,
    ``-inference``), rmw's own threads are not Python threads and are summed as ``other``."""
    return {t.native_id: t.name.removeprefix("bench_loc-") for t in threading.enumerate() if t.native_id}


def _counts(node: Any) -> dict[str, int]:
    d = node.diagnostics_summary()["drops"]
    return {"stale": d["inference.stale"], "sync": sum(v for k, v in d.items() if k.startswith("sync."))}


def _paced(h: _Harness, rate: float, seconds: float, rss: list[float] | None = None) -> dict[str, Any]:
    """Publish paced at ``rate`` bundles/s for ``seconds``: measured offered and pose rates, superseded (stale) and
    synchronizer drops during the step; with ``rss``, this process's RSS sampled every second into it."""
    n0 = h.cameras.call("count")
    c0 = _counts(h.node)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            rss.append(rss_mb())  # type: ignore[union-attr]

    sampler = threading.Thread(target=sample, daemon=True) if rss is not None else None
    if sampler is not None:
        rss.append(rss_mb())  # type: ignore[union-attr]
        sampler.start()
    cpu0, busy0, w0 = thread_cpu_s(), machine_busy_s(), time.perf_counter()
    sent, complete, elapsed, camera_cpu = h.cameras.call("paced", rate, seconds, h.stamp)
    stop.set()
    cpu1, busy1, w1 = thread_cpu_s(), machine_busy_s(), time.perf_counter()
    h.stamp += (sent + 1) * STAMP_STEP_NS
    time.sleep(0.3)  # let the last poses arrive before counting
    c1 = _counts(h.node)
    poses = h.cameras.call("count") - n0
    names = _thread_names()
    cpu: dict[str, float] = {}
    for tid, sec in cpu1.items():
        key = names.get(tid, "other")
        cpu[key] = cpu.get(key, 0.0) + sec - cpu0.get(tid, sec)
    return {"target": rate, "offered": sent / elapsed, "complete": complete / elapsed, "poses": poses / elapsed,
            "stale": c1["stale"] - c0["stale"], "sync_drops": c1["sync"] - c0["sync"],
            # CPU per pose of each thread of this process (ms) and the cores the process used during the step
            "cpu_ms_per_pose": {k: 1e3 * v / max(poses, 1) for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
                                if v > 0},
            "cores": sum(cpu.values()) / (w1 - w0), "camera_cores": camera_cpu / elapsed,
            # what other processes of the machine used meanwhile: on a shared box, the figure that says whether a
            # step can be trusted (the ratios assume the node and the model-only loop had the same machine)
            "other_cores": max(0.0, (busy1 - busy0 - sum(cpu.values()) - camera_cpu) / (w1 - w0))}


def run(num_cameras: int, size: int, transport: str, seconds: float, device: str, preset_name: str,
        latency_samples: int, threads: int = 1, fractions: tuple[float, ...] = FRACTIONS,
        overload_s: float = 0.0, torchscript: bool = True, queue_depth: int | None = None,
        timing: CameraTiming | None = None) -> dict[str, Any]:
    """One configuration end to end: latency, model-only rate, the paced sweep at ``fractions`` of it, then
    ``overload_s`` seconds at 2x the model rate with RSS sampled (0 = skip).

    The checkpoint lives in a temporary folder removed when the run ends (after the node is torn down)."""
    imgs, jpegs = _inputs(num_cameras, size)
    rss: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mfapr_bench_node_") as tmp:
        ckpt = make_checkpoint(Path(tmp), num_cameras, size, preset_name)
        with _graph(ckpt, device, transport, threads, imgs, jpegs, torchscript, queue_depth, timing) as h:
            path = getattr(h.node.localizer, "inference_path", "eager")
            depth = h.node.params.bundle_queue_depth
            _wait_for_discovery(h)
            _warm_up(h)
            lat = _measure_latency(h, latency_samples)
            stage = _stage_times(h.node)
            model_times: list[float] = []
            base_rate = _model_only_rate(h.node, imgs, h.stamp, times=model_times)
            sweep = [_paced(h, base_rate * frac, seconds) for frac in fractions]
            overload = _paced(h, 2.0 * base_rate, overload_s, rss) if overload_s > 0 else None
            summary = h.node.diagnostics_summary()
            # measured again after the sweep: on a shared machine the load changes within a run; the ratios use
            # the mean of both, and the spread between them says how far a ratio can be trusted
            base_after = _model_only_rate(h.node, imgs, h.stamp, times=model_times)
    q = max(1, len(rss) // 4)
    return {
        "cameras": num_cameras, "threads": threads, "depth": depth, "inference_path": path, "lat_n": len(lat),
        "e2e_p50": _pct(lat, 50), "e2e_p99": _pct(lat, 99),
        "model_p50": _pct(model_times, 50), "model_p99": _pct(model_times, 99),
        **{f"{k}_p50": _pct(v, 50) for k, v in stage.items()}, **{f"{k}_p99": _pct(v, 99) for k, v in stage.items()},
        "baseline_hz": 0.5 * (base_rate + base_after), "baseline_before_hz": base_rate,
        "baseline_after_hz": base_after, "sweep": sweep,
        # kept = poses / complete bundles offered (a bundle with a lost frame cannot be; ideal cameras: all are)
        "sustained_hz": max([w["poses"] for w in sweep if w["poses"] >= 0.95 * w["complete"]], default=0.0),
        "timing": "realistic" if timing is not None and timing.realistic else "ideal",
        "overload": overload, "rss_mb": rss,
        "rss_change": (float(np.mean(rss[-q:])) / float(np.mean(rss[:q])) - 1.0) if len(rss) >= 4 else float("nan"),
        "drops": {k: v for k, v in summary["drops"].items() if v},
    }


def print_report(rows: list[dict[str, Any]]) -> None:
    """The tables of a run (also what ``bench/gpu_suite.py`` logs)."""
    print("\nlatency, one bundle in flight (ms)              p50      p99")
    for r in rows:
        print(f"  N={r['cameras']:<3} threads={r['threads']} depth={r['depth']} end-to-end (n={r['lat_n']:<3}) "
              f"{r['e2e_p50']:7.2f}  {r['e2e_p99']:7.2f}")
        for k, what in (("sync", "sync (per message)"), ("wait", "wait (queue + decoded slot)"),
                        ("decode", "decode (per bundle)"), ("inference", "inference"), ("publish", "publish")):
            print(f"        {what:<38}{r[k + '_p50']:7.2f}  {r[k + '_p99']:7.2f}")
        print(f"        {'model alone (Localizer.infer, idle)':<38}{r['model_p50']:7.2f}  {r['model_p99']:7.2f}"
              f"   p99/p50: end-to-end {r['e2e_p99'] / r['e2e_p50']:.2f}, model {r['model_p99'] / r['model_p50']:.2f}")
    print(f"\nthroughput vs offered load (bundles/s; x = share of the model-only rate; kept = poses / complete "
          f"bundles offered; cameras {rows[0].get('timing', 'ideal')})")
    print("          offered  complete   poses/s  kept  poses/model  superseded  sync drops  other procs (cores)")
    for r in rows:
        b = r["baseline_hz"]
        print(f"  N={r['cameras']:<3} threads={r['threads']} depth={r['depth']} model alone (Localizer.infer, "
              f"{r['inference_path']}): "
              f"{b:.1f}/s (before the "
              f"sweep {r['baseline_before_hz']:.1f}, after {r['baseline_after_hz']:.1f}; offered: x before)")
        for w in r["sweep"] + ([r["overload"]] if r["overload"] else []):
            kept = w["poses"] / max(w["complete"], 1e-9)
            print(f"        {w['offered']:9.1f} {w['complete']:9.1f} {w['poses']:9.1f}  {kept:4.2f}  "
                  f"{w['poses'] / b:11.2f}  {w['stale']:10d}  {w['sync_drops']:10d}  {w['other_cores']:19.2f}")
        print(f"        max sustained (>= 95 % kept): {r['sustained_hz']:.1f}/s = {r['sustained_hz'] / b:.2f} x the "
              "model-only rate")
        at2 = [w for w in r["sweep"] if abs(w["target"] / r["baseline_before_hz"] - 2.0) < 1e-6]
        if at2:
            print(f"        at 2x the model rate: {at2[0]['poses']:.1f} poses/s = {at2[0]['poses'] / b:.2f} x")
        at1 = [x for x in r["sweep"] if abs(x["target"] / r["baseline_before_hz"] - 1.0) < 1e-6]
        for w in at1 + ([r["overload"]] if r["overload"] else []):
            per = ", ".join(f"{k} {v:.2f}" for k, v in w["cpu_ms_per_pose"].items() if v >= 0.01)
            x = w["target"] / r["baseline_before_hz"]
            print(f"        CPU per pose at {x:.1f}x offered ({w['cores']:.2f} cores used, camera process "
                  f"{w['camera_cores']:.2f}, other processes {w['other_cores']:.2f}; ms): {per}")
        if r["overload"]:
            rss = r["rss_mb"]
            print(f"        overload run: {len(rss)} RSS samples, {min(rss):.0f}..{max(rss):.0f} MiB, last quarter vs "
                  f"first {100 * r['rss_change']:+.1f} %")
        print(f"        drops: {r['drops'] or 'none'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, nargs="+", default=[10])
    ap.add_argument("--size", type=int, default=64, help="image size in px (published and model input)")
    ap.add_argument("--transport", choices=("raw", "compressed"), default="compressed")
    ap.add_argument("--seconds", type=float, default=3.0, help="duration of each offered-load step")
    ap.add_argument("--latency-samples", type=int, default=50)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--preset", default="demo", help="model preset (tiny, demo, transposenet, ...)")
    ap.add_argument("--executor-threads", type=int, nargs="+", default=[1, 4],
                    help="executor_threads values to compare (1 = single-threaded, the node's default)")
    ap.add_argument("--queue-depth", type=int, nargs="+", default=[0],
                    help="bundle_queue_depth values to compare (0 = the node's default; 1 = latest wins)")
    ap.add_argument("--overload-seconds", type=float, default=60.0,
                    help="overload run at 2x the model rate with RSS sampled (single-threaded run only; 0 = off)")
    ap.add_argument("--torchscript", choices=("on", "off"), default="on",
                    help="the node's torchscript parameter (on = its default: the model as a TorchScript graph; off = "
                         "eager PyTorch); the model-only rate uses the same path")
    ap.add_argument("--cameras-timing", choices=("ideal", "realistic"), default="ideal",
                    help="ideal: every camera at the bundle instant, same stamp; realistic: per-camera stamp offsets "
                         "(±5 ms), heavy-tailed publish delays and 0.2 %% lost frames (CameraTiming)")
    ap.add_argument("--quick", action="store_true",
                    help="2 s steps, 20 latency samples, a 10 s overload run (the shape of the full run, quickly)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.latency_samples, args.overload_seconds = 2.0, 20, min(args.overload_seconds, 10.0)
    import torch

    print(f"# bench/node.py  preset={args.preset} size={args.size}px transport={args.transport} "
          f"device={args.device} torch_threads={torch.get_num_threads()} OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', '-')} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} "
          f"torchscript={args.torchscript} cameras_timing={args.cameras_timing}", flush=True)
    rows = [run(n, args.size, args.transport, args.seconds, args.device, args.preset, args.latency_samples, th,
                overload_s=args.overload_seconds if th == args.executor_threads[0] else 0.0,
                torchscript=args.torchscript == "on", queue_depth=qd or None,
                timing=CameraTiming(realistic=args.cameras_timing == "realistic"))
            for n in args.cameras for qd in args.queue_depth for th in args.executor_threads]
    print_report(rows)
    print(f"# load average at the end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
