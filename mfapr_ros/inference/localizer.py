"""Inference: a checkpoint → rig poses (``T_world_rig``) with covariance and latency, synchronously or on a worker.

:class:`Localizer` is what the node, the bag evaluator and ``mfapr evaluate`` share: it loads the checkpoint with
``models.load_model`` (safetensors + JSON, no pickle), takes the rig and the preprocessing *from the checkpoint*
(the node cannot drift from training), runs ``preprocess.preprocess_bundle`` (the one preprocessing) and the model,
and returns :class:`RigPose`. :class:`AsyncLocalizer` runs it on one worker thread so ROS callbacks never wait for
the network: a newer bundle replaces a pending one (latest wins; the replaced one is counted ``stale_dropped``).

Device and precision decisions (documented in docs/runtime.md):

* ``device="auto"`` → ``cuda`` when available, else ``cpu``. ``cuda``/``cuda:N`` requested but unusable → a
  warning and the CPU, or :class:`~mfapr_ros.core.errors.ConfigError` with ``strict=True``.
* ``precision``: ``fp32``; ``fp16``/``bf16`` run the model under ``torch.autocast`` (normalisation layers and the
  pose outputs stay fp32, so the quaternion stays unit and stamps/poses stay exact). ``fp16`` on the CPU → a
  warning and fp32 (CPU fp16 kernels are slow or missing), ``ConfigError`` if strict; ``bf16`` on the CPU is honoured.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.preprocess import PreprocessConfig, preprocess_bundle
from mfapr_ros.core.rig_symmetry import exact_cyclic_shifts

from .baselines import load_for_checkpoint, thumbnails
from .calibration import META_KEY, stored_scales, uses_anchor_covariance
from .compiled import ABSOLUTE_KEYS, CompiledModel, compile_model
from .covariance import DEFAULT_COVARIANCE, covariance_matrix, model_anchors, pose_covariances

_LOG = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: the model outputs :meth:`Localizer._forward` reads (pose, variances, the anchor mixture): all a traced graph
#: returns and is verified on
MODEL_OUTPUTS = ("t", "q", "log_var", "anchor_logits", "anchor_positions", "t_norm")


@dataclass(frozen=True)
class RigPose:
    """One estimate of ``T_world_rig`` at ``stamp_ns``.

    ``covariance`` is 6×6 in the order ``[x y z rot_x rot_y rot_z]`` (rotations about the fixed world axes, as in
    ``geometry_msgs/PoseWithCovariance``), position in m², rotation in rad². ``latency_s`` is the wall time from the
    call (or, for :class:`AsyncLocalizer`, from ``submit``) to the result; ``mask`` says which cameras were used.
    """

    stamp_ns: int
    t: np.ndarray
    q: np.ndarray
    covariance: np.ndarray
    latency_s: float
    mask: np.ndarray
    extras: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class ModelRun:
    """The raw outputs of one forward pass of a bundle (batch of 1) and its inputs: :meth:`Localizer.run_model`'s
    result, turned into a :class:`RigPose` by :meth:`Localizer.finish` (possibly on another thread)."""

    outputs: dict[str, torch.Tensor]
    x: torch.Tensor
    mask: torch.Tensor


def resolve_device(device: str, strict: bool = False, logger: logging.Logger | None = None) -> torch.device:
    """``auto|cpu|cuda|cuda:N`` → a usable ``torch.device`` (warning + CPU fallback unless ``strict``)."""
    log = logger or _LOG
    d = str(device).strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if d == "cpu":
        return torch.device("cpu")
    if d == "cuda" or d.startswith("cuda:"):
        idx = 0
        if d.startswith("cuda:"):
            try:
                idx = int(d.split(":", 1)[1])
            except ValueError:
                raise ConfigError(f"device '{device}': the CUDA index must be an integer (cuda:0, cuda:1 …)") from None
        if not torch.cuda.is_available():
            why = "CUDA is not available (no GPU, driver, or CUDA build of torch)"
        elif idx >= torch.cuda.device_count():
            why = f"only {torch.cuda.device_count()} CUDA device(s) are visible"
        else:
            return torch.device("cuda", idx)
        if strict:
            raise ConfigError(f"device '{device}' requested but {why}; use device 'cpu' or 'auto', or strict=false "
                              "to fall back to the CPU")
        log.warning("device '%s' requested but %s: running on the CPU (set strict to make this an error)",
                    device, why)
        return torch.device("cpu")
    raise ConfigError(f"device '{device}' is not valid; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def resolve_precision(precision: str, device: torch.device, strict: bool = False,
                      logger: logging.Logger | None = None) -> str:
    """Validate ``precision`` for ``device``; fp16 on the CPU becomes fp32 with a warning (error if strict)."""
    log = logger or _LOG
    p = str(precision).strip().lower()
    if p not in PRECISIONS:
        raise ConfigError(f"precision '{precision}' is not valid; use one of {sorted(PRECISIONS)}")
    if p == "fp16" and device.type == "cpu":
        if strict:
            raise ConfigError("precision 'fp16' is not supported on the CPU; use fp32 or bf16 (or a CUDA device)")
        log.warning("precision fp16 is not supported on the CPU: using fp32 (bf16 is available on the CPU)")
        return "fp32"
    return p


class Localizer:
    """A loaded checkpoint ready for inference (see the module docstring for device/precision rules).

    Args:
        checkpoint: ``NAME``, ``NAME.json`` or ``NAME.safetensors``.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        precision: ``fp32`` | ``fp16`` | ``bf16``.
        strict: unusable device/precision → ``ConfigError`` instead of a warning and a fallback.
        default_covariance: used when the model does not predict variances: ``(pos_var, rot_var)``, 6-vector or 6×6.
        warmup: forward passes at load time (CUDA kernels/cuDNN autotune happen here, not on the first bundle).
        max_batch: :meth:`infer_batch` splits larger lists into forward passes of this many bundles.
        retrieval: load ``<checkpoint>.retrieval.safetensors`` when present; every pose then has
            ``extras["retrieval_t"]``, ``["retrieval_q"]`` and ``["retrieval_score"]`` (the nearest training
            bundle by thumbnail descriptor), the baseline every report shows beside the model.
        calibrated: apply the checkpoint's ``covariance_calibration`` σ factors (``mfapr calibrate``) to every
            covariance; ``False`` gives the raw covariances (what calibration itself fits on).
        anchor_covariance: for an anchor-head model without ``log_var``, add the anchor mixture's spread to the
            position block (:func:`anchor_position_covariance`). ``None``: follow the stored calibration's
            ``source`` (the scales only fit the covariance they were fitted on), on when uncalibrated.
        torchscript: run batch-1 CPU fp32 forward passes (:meth:`infer`, :meth:`infer_preprocessed`) through a
            traced, frozen graph verified against eager mode at load time (:mod:`.compiled`): ~1.7x faster for
            the demo model and GIL-free, so other threads of the process run meanwhile. Batches, other devices
            and precisions, and a model that does not trace (logged once) run eagerly. ``False``: always eager.
    """

    def __init__(self, checkpoint: str | Path, device: str = "auto", precision: str = "fp32", strict: bool = False,
                 default_covariance: Any = DEFAULT_COVARIANCE, warmup: int = 1, max_batch: int = 32,
                 logger: logging.Logger | None = None, retrieval: bool = True, calibrated: bool = True,
                 anchor_covariance: bool | None = None, torchscript: bool = True) -> None:
        from mfapr_ros.models import load_model  # lazy: AsyncLocalizer users (the node's tests) need no model zoo

        self._log = logger or _LOG
        self.device = resolve_device(device, strict, self._log)
        self.precision = resolve_precision(precision, self.device, strict, self._log)
        self.default_covariance = covariance_matrix(default_covariance)
        if not isinstance(warmup, int) or warmup < 0:
            raise ConfigError(f"warmup must be a non-negative integer, got {warmup!r}")
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ConfigError(f"max_batch must be a positive integer, got {max_batch!r}")
        self.max_batch = max_batch
        self.model, self.checkpoint = load_model(checkpoint, device=self.device)
        self.rig = self.checkpoint.rig
        self.preprocess_cfg = PreprocessConfig.from_dict(self.checkpoint.preprocess)
        self.num_cameras = int(self.model.num_cameras)
        if self.rig.num_cameras != self.num_cameras:
            raise ConfigError(f"{self.checkpoint.path}: rig '{self.rig.name}' has {self.rig.num_cameras} cameras but "
                              f"the model takes {self.num_cameras}")
        self.t_scale = float(self.model.config["pose_normalization"]["t_scale"])
        if anchor_covariance is None:
            anchor_covariance = uses_anchor_covariance(self.checkpoint.meta)
        self.anchor_covariance = bool(anchor_covariance)
        #: (position, rotation) σ factors applied to every covariance, or None (uncalibrated / ``calibrated=False``)
        self.covariance_scales = stored_scales(self.checkpoint.meta) if calibrated else None
        fitted_default = (self.checkpoint.meta.get(META_KEY) or {}).get("default_covariance")
        if (self.covariance_scales is not None and fitted_default is not None
                and not np.allclose(np.diag(self.default_covariance), fitted_default)):
            self._log.warning("%s: covariance calibration was fitted with default covariance diagonal %s but %s is "
                              "in use; the stored scales are applied to it anyway (re-run `mfapr calibrate`)",
                              self.checkpoint.path, fitted_default, np.diag(self.default_covariance).tolist())
        # the image-retrieval prior: written beside the checkpoint by training (inference/baselines.py); each pose then
        # carries the nearest training bundle's pose in ``extras`` (reports show it as a baseline), and on a rig
        # with cyclic symmetries (a ring) also the shift-aware lookup over the query's slot shifts
        self.retrieval = load_for_checkpoint(self.checkpoint.path) if retrieval else None
        self.retrieval_shifts = exact_cyclic_shifts(self.rig) if self.retrieval is not None else []
        self._lock = threading.Lock()
        #: the verified graph batch-1 forward passes run through, or None (eager); ``inference_path`` says which
        self.compiled: CompiledModel | None = None
        self.inference_path = "eager"
        if torchscript:
            self._compile()
        for _ in range(warmup):
            blank = [np.zeros((self.preprocess_cfg.crop, self.preprocess_cfg.crop, 3), np.uint8)] * self.num_cameras
            self.infer(blank, 0)

    def __repr__(self) -> str:
        return (f"Localizer({self.checkpoint.path}, device={self.device}, precision={self.precision}, "
                f"rig={self.rig.name}, cameras={self.num_cameras}, {self.inference_path})")

    def _compile(self) -> None:
        """Trace the model for batch-1 inference (see ``torchscript`` in the class docstring); logs the outcome."""
        if self.device.type != "cpu" or self.precision != "fp32":
            self._log.info("torchscript: only CPU fp32 inference is traced; the model runs eagerly on %s (%s)",
                           self.device, self.precision)
            return
        compiled, why = compile_model(self.model, self.num_cameras, self.preprocess_cfg.crop, self.device,
                                      MODEL_OUTPUTS)
        if compiled is None:
            self._log.warning("torchscript: the model could not be traced and verified (%s); running it eagerly "
                              "(slower, and it holds the GIL while it runs)", why)
            return
        self.compiled, self.inference_path = compiled, "torchscript"
        err = ", ".join(f"{k} {compiled.max_error[k]:.1g}" for k in ABSOLUTE_KEYS if k in compiled.max_error)
        self._log.info("torchscript: batch-1 forward passes run the %s TorchScript graph (max |graph - eager| %s; "
                       "built in %.1f s); torchscript:=false runs the model eagerly", compiled.kind, err,
                       compiled.seconds)

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=PRECISIONS[self.precision])

    def _prepare(self, images: Sequence[Any], mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if len(images) != self.num_cameras:
            raise DataError(f"bundle has {len(images)} images but the rig '{self.rig.name}' has {self.num_cameras} "
                            f"cameras ({self.rig.camera_names}); pass None for a missing camera")
        ims = list(images)
        if mask is not None:
            m = np.asarray(mask, dtype=bool).reshape(-1)
            if m.shape != (self.num_cameras,):
                raise DataError(f"mask has {m.size} entries; the rig has {self.num_cameras} cameras")
            ims = [im if ok else None for im, ok in zip(ims, m, strict=True)]
        if all(im is None for im in ims):
            raise DataError("bundle has no camera image (all None or masked out); nothing to localise")
        return preprocess_bundle(ims, self.preprocess_cfg, device=self.device)

    def _run(self, x: torch.Tensor, m: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's raw outputs for a batch: the traced graph when it fits, else eager mode."""
        graph = self.compiled
        if graph is not None and graph.accepts(x, m):
            # validation stays outside the graph (data-dependent); no lock: a frozen graph holds no Python state
            # and is safe to run from several threads at once, which then really run in parallel (no GIL)
            with torch.inference_mode():
                return graph(x, self.model.check_inputs(x, m))
        with self._lock, torch.inference_mode(), self._autocast():
            return self.model(x, m)

    def _forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._outputs(self._run(x, m))

    def _outputs(self, out: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw outputs → (t metres float64, unit q with w ≥ 0, 6×6 covariances), per bundle of the batch."""
        # float64 end to end (large map coordinates keep cm resolution); a copy, as every array of a RigPose: a view
        # would keep the model's output tensor alive, and poses kept by consumers (~/path: 1000) then pinned
        # ~470 MiB of freed model buffers in the allocator (issue 25, RSS at 2x offered)
        t = out["t"].double().cpu().numpy().copy()
        q = out["q"].float().cpu().numpy().astype(np.float64)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        q *= np.where(q[:, :1] < 0, -1.0, 1.0)  # canonical sign (w ≥ 0): q and −q are the same rotation
        lv = out.get("log_var")
        cov = pose_covariances(None if lv is None else lv.float().cpu().numpy(), t.shape[0], self.t_scale,
                               self.default_covariance, self.covariance_scales,
                               model_anchors(out) if self.anchor_covariance else None)
        return t, q, cov

    def _retrieve(self, x: torch.Tensor, m: torch.Tensor) -> list[dict[str, Any]]:
        """The retrieval prior per bundle of a preprocessed batch (empty dicts without a database)."""
        if self.retrieval is None:
            return [{} for _ in range(x.shape[0])]
        desc = thumbnails(x.float().cpu(), m.cpu())
        t, q, score = self.retrieval.query(desc)
        out = [{"retrieval_t": t[i], "retrieval_q": q[i], "retrieval_score": float(score[i])} for i in range(len(t))]
        if len(self.retrieval_shifts) > 1:
            ts, qs, ss, ks = self.retrieval.query_shifts(desc, self.retrieval_shifts)
            for i, ex in enumerate(out):
                ex.update({"retrieval_shift_t": ts[i], "retrieval_shift_q": qs[i],
                           "retrieval_shift_score": float(ss[i]), "retrieval_shift": int(ks[i])})
        return out

    def infer(self, images: Sequence[Any], stamp_ns: int, mask: Any = None) -> RigPose:
        """One bundle (slot order = ``self.rig.cameras``; ``None`` for a missing camera) → :class:`RigPose`."""
        t0 = time.perf_counter()
        x, m = self._prepare(images, mask)
        return self.infer_preprocessed(x, m, stamp_ns, t0)

    def preprocess(self, images: Sequence[Any], mask: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first half of :meth:`infer`: one bundle → ``(x (T,3,S,S), mask (T,))`` on the model's device.

        Why apart: the node preprocesses the next bundle on its decode thread while the model runs the previous
        one (``core.bundle_pipeline``); :meth:`infer_preprocessed` is the other half."""
        return self._prepare(images, mask)

    def infer_preprocessed(self, x: torch.Tensor, m: torch.Tensor, stamp_ns: int,
                           t0: float | None = None) -> RigPose:
        """The second half of :meth:`infer`: the model on :meth:`preprocess`'s output; ``latency_s`` from ``t0``
        (``perf_counter``; default now). Equals :meth:`finish` of :meth:`run_model`."""
        t0 = time.perf_counter() if t0 is None else t0
        return self.finish(self.run_model(x, m), stamp_ns, t0)

    def run_model(self, x: torch.Tensor, m: torch.Tensor) -> ModelRun:
        """Only the model, on :meth:`preprocess`'s output (validation included); :meth:`finish` makes the pose.

        Why apart (issue 25): the node's inference thread is its bottleneck, so it runs just this; the numpy
        post-processing and the retrieval lookup (~0.2 ms of Python under the GIL) run on the publish thread."""
        return ModelRun(self._run(x[None], m[None]), x, m)

    def finish(self, run: ModelRun, stamp_ns: int, t0: float | None = None) -> RigPose:
        """The pose of a :meth:`run_model` result: metres, canonical quaternion, covariance, retrieval prior;
        ``latency_s`` from ``t0`` (``perf_counter``; default now)."""
        t0 = time.perf_counter() if t0 is None else t0
        t, q, cov = self._outputs(run.outputs)
        extras = self._retrieve(run.x[None], run.mask[None])[0]
        mask = run.mask.cpu().numpy().copy()
        return RigPose(int(stamp_ns), t[0], q[0], cov[0], time.perf_counter() - t0, mask, extras)

    def infer_batch(self, items: Sequence[tuple[Any, ...]]) -> list[RigPose]:
        """Many bundles ``(images, stamp_ns[, mask])`` in forward passes of up to ``max_batch`` (the bag evaluator).

        Each pose's ``latency_s`` is the wall time of the forward pass it was part of.
        """
        out: list[RigPose] = []
        for start in range(0, len(items), self.max_batch):
            chunk = items[start:start + self.max_batch]
            t0 = time.perf_counter()
            xs, ms, stamps = [], [], []
            for k, item in enumerate(chunk):
                if not 2 <= len(item) <= 3:
                    raise DataError(f"infer_batch item {start + k}: expected (images, stamp_ns[, mask])")
                x, m = self._prepare(item[0], item[2] if len(item) == 3 else None)
                xs.append(x)
                ms.append(m)
                stamps.append(int(item[1]))
            xb, mb = torch.stack(xs), torch.stack(ms)
            t, q, cov = self._forward(xb, mb)
            dt = time.perf_counter() - t0
            extras = self._retrieve(xb, mb)
            out += [RigPose(s, t[i], q[i], cov[i], dt, ms[i].cpu().numpy().copy(), extras[i])
                    for i, s in enumerate(stamps)]
        return out


class AsyncLocalizer:
    """Runs a localizer on one worker thread; :meth:`submit` never blocks (latest bundle wins).

    ``on_result(RigPose)`` and ``on_error(Exception)`` run on the worker thread. Exceptions from inference (or from
    ``on_result``) are counted and passed to ``on_error`` (logged when it is ``None``), never raised into the
    caller, and the worker keeps going. :meth:`close` joins the thread; use it (or ``with``) before shutdown.
    Anything with an ``infer(images, stamp_ns, mask)`` method works as ``localizer`` (tests use slow fakes).
    """

    def __init__(self, localizer: Any, on_result: Callable[[RigPose], Any],
                 on_error: Callable[[BaseException], Any] | None = None, logger: logging.Logger | None = None,
                 name: str = "mfapr-localizer") -> None:
        self.localizer = localizer
        self._on_result = on_result
        self._on_error = on_error
        self._log = logger or _LOG
        self._cond = threading.Condition()
        self._pending: tuple[Any, int, Any, float] | None = None
        self._busy = False
        self._closed = False
        self._stats = {"submitted": 0, "processed": 0, "stale_dropped": 0, "errors": 0, "callback_errors": 0,
                       "dropped_closed": 0, "discarded": 0}
        self._latencies: list[float] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def stats(self) -> dict[str, int]:
        with self._cond:
            return dict(self._stats)

    def latencies(self, clear: bool = False) -> list[float]:
        """End-to-end latencies (submit → result) in seconds of the poses produced so far (for diagnostics)."""
        with self._cond:
            out = list(self._latencies)
            if clear:
                self._latencies.clear()
            return out

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, images: Sequence[Any], stamp_ns: int, mask: Any = None) -> bool:
        """Queue a bundle for inference; replaces (and counts) a pending one. Returns False once closed."""
        item = (list(images), int(stamp_ns), mask, time.perf_counter())
        with self._cond:
            if self._closed:
                self._stats["dropped_closed"] += 1
                return False
            self._stats["submitted"] += 1
            if self._pending is not None:
                self._stats["stale_dropped"] += 1
            self._pending = item
            self._cond.notify_all()  # the worker, and wait_idle() callers, share this condition
        return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is pending or running (tests, end of a bag); returns False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._busy:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def discard_pending(self) -> bool:
        """Drop the bundle waiting for the worker, if any (counted ``discarded``); the running one finishes.
        Returns whether one was dropped (a lifecycle deactivate: queued input must not be published later)."""
        with self._cond:
            if self._pending is None:
                return False
            self._pending = None
            self._stats["discarded"] += 1
            self._cond.notify_all()
            return True

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop accepting bundles, drop a pending one, finish the running one and join the thread."""
        with self._cond:
            if self._pending is not None:
                self._stats["dropped_closed"] += 1
                self._pending = None
            self._closed = True
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                self._log.warning("localizer worker did not stop within %.1f s (inference still running)",
                                  timeout or 0.0)

    def __enter__(self) -> AsyncLocalizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _report(self, exc: BaseException, what: str) -> None:
        if self._on_error is not None:
            try:
                self._on_error(exc)
                return
            except Exception:  # noqa: BLE001 - an error handler failing must not kill the worker
                self._log.exception("localizer on_error callback failed")
        self._log.warning("localizer %s failed: %s: %s", what, type(exc).__name__, exc)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:  # closed and nothing to do
                    return
                images, stamp, mask, t_submit = self._pending
                self._pending = None
                self._busy = True
            try:
                try:
                    pose = self.localizer.infer(images, stamp, mask)
                except Exception as e:  # noqa: BLE001 - counted and reported, the worker keeps serving
                    with self._cond:
                        self._stats["errors"] += 1
                    self._report(e, "inference")
                    continue
                latency = time.perf_counter() - t_submit
                if isinstance(pose, RigPose) and math.isfinite(latency):
                    pose = RigPose(pose.stamp_ns, pose.t, pose.q, pose.covariance, latency, pose.mask, pose.extras)
                with self._cond:
                    self._stats["processed"] += 1
                    self._latencies.append(latency)
                    if len(self._latencies) > 10_000:
                        del self._latencies[:5_000]
                try:
                    self._on_result(pose)
                except Exception as e:  # noqa: BLE001
                    with self._cond:
                        self._stats["callback_errors"] += 1
                    self._report(e, "on_result callback")
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
