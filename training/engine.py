"""The training engine: plain PyTorch, resumable bit-for-bit, DDP-ready.

Why it is built this way:

* **Resume = same run.** Data order is a pure function of ``(seed, epoch)`` (a ``DistributedSampler`` per epoch,
  also for one process), each sample's augmentation randomness is a pure function of ``(seed, epoch, index)``
  (:class:`SeededDataset`), and the checkpoint stores the position inside the epoch plus the model, loss weights,
  optimizer, AMP scaler and the global torch / numpy / python RNG states (tensors in safetensors, the rest in
  JSON — never pickle). ``--resume`` after a SIGKILL therefore continues to the same weights, bit for bit on CPU.
* **Learning-rate schedule is a function of the step** (:func:`lr_at`), so it has no state to lose.
* **Checkpoints are pairs + a pointer.** ``checkpoints/step_N.{json,safetensors}`` is a model checkpoint that
  :func:`mfapr_ros.models.load_model` and the node's Localizer read; ``step_N.state.{json,safetensors}`` is the
  trainer state; ``checkpoints/latest.json`` names the newest complete pair and is written last (atomically),
  so a kill at any instant leaves a resumable folder. ``best.{json,safetensors}`` is the best-by-validation-median
  model, ``last.{json,safetensors}`` the final one; ``config.yaml`` is the resolved config.
* **One process or many.** Under torchrun the model + loss are wrapped together in DDP (so the learned loss
  weights are synchronised too); rank 0 alone logs, validates and writes.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from mfapr_ros.core.checkpoint import load_checkpoint, save_checkpoint
from mfapr_ros.core.errors import CheckpointError, ConfigError, DataError
from mfapr_ros.core.io import atomic_write_json, atomic_write_text

from .config import ExperimentConfig, dump_yaml
from .distributed import DistInfo, all_reduce_mean, barrier
from .gradient_blending import GradientBlender
from .health import HeadProbe, health_report
from .losses import LossSettings, PoseLoss, camera_ground_truth

log = logging.getLogger("mfapr_training")

STATE_FORMAT = "mfapr_training.state"


# --------------------------------------------------------------------------------------------- data
class SeededDataset(Dataset):
    """Wraps a dataset so each item's randomness depends only on ``(seed, epoch, index)``.

    Augmentations inside the wrapped dataset may use the global torch / numpy / python RNGs; around each
    ``__getitem__`` those are reseeded and then restored, so (a) an item is the same whether it is loaded in the
    main process or in any worker, before or after a resume, and (b) loading data never perturbs the RNG stream
    the model's dropout uses.
    """

    def __init__(self, inner: Any, seed: int) -> None:
        self.inner = inner
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> Any:
        s = (self.seed * 1_000_003 + self.epoch * 7_919 + int(index)) % (2**31 - 1)
        np_state, py_state = np.random.get_state(), random.getstate()
        with one_torch_thread(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            np.random.seed(s)
            random.seed(s)
            try:
                return self.inner[index]
            finally:
                np.random.set_state(np_state)
                random.setstate(py_state)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run a sample's tensor work on one intra-op thread, then restore the count.

    Why: a sample is a few small tensors (4 images of 64 px); with 2+ intra-op threads each op pays an OpenMP fork
    and barrier, and on a busy 2-core machine the spinning made colour jitter 30 ms per sample instead of 1.5 ms —
    the data path, not the model, set the step time. (DataLoader worker processes already use one thread.)
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, info: DistInfo, shuffle: bool = True
                  ) -> list[list[int]]:
    """This rank's batches of one epoch: a ``DistributedSampler`` permutation (seed + epoch), full batches only."""
    if n < batch_size * info.world_size:
        raise DataError(f"training set has {n} samples, fewer than one batch per process ({batch_size} × "
                        f"{info.world_size} ranks); lower train.batch_size or add data")
    sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank, shuffle=shuffle, seed=seed,
                                 drop_last=True)
    sampler.set_epoch(epoch)
    idx = list(sampler)
    return [idx[i:i + batch_size] for i in range(0, len(idx) - batch_size + 1, batch_size)]


def make_loader(dataset: Dataset, batches: Sequence[Sequence[int]], num_workers: int, seed: int, device: str
                ) -> DataLoader:
    """A loader over explicit batches; its own generator keeps the global RNG untouched (the resume invariant)."""
    return DataLoader(dataset, batch_sampler=[list(b) for b in batches], num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed), pin_memory=device.startswith("cuda"),
                      persistent_workers=False)


# --------------------------------------------------------------------------------------------- schedule
def lr_at(step: int, cfg: ExperimentConfig, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup, then constant / step / cosine."""
    base, sc = cfg.optim.lr, cfg.schedule
    if sc.warmup_steps and step < sc.warmup_steps:
        return base * (step + 1) / sc.warmup_steps
    k = step - sc.warmup_steps
    if sc.name == "constant":
        return base
    if sc.name == "step":
        return base * sc.gamma ** (k // sc.step_size)
    span = max(1, total_steps - sc.warmup_steps)
    progress = min(1.0, k / span)
    floor = base * sc.min_lr_ratio
    return floor + (base - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(params: Sequence[nn.Parameter], cfg: ExperimentConfig,
                   weight_params: Sequence[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """Network parameters in group 0; the learned loss weights (sx, sq, …) in group 1 with ``loss.weights_lr``
    and no weight decay. Why their own group: Adam moves a parameter by about lr per step, so at a network lr of
    1e-4 the weights cannot travel the few units to their equilibrium within a run (they moved 0.35 in the old
    demo), and decaying them towards 0 biases the balance."""
    o = cfg.optim
    kw = dict(lr=o.lr, weight_decay=o.weight_decay)  # betas (0.9, 0.999), eps 1e-8: torch's defaults
    ids = {id(p) for p in weight_params}
    groups: list[dict[str, Any]] = [{"params": [p for p in params if id(p) not in ids]}]
    if weight_params:
        groups.append({"params": list(weight_params), "weight_decay": 0.0, "lr_scale": weights_lr_scale(cfg)})
    return torch.optim.AdamW(groups, **kw) if o.name == "adamw" else torch.optim.Adam(groups, **kw)


def weights_lr_scale(cfg: ExperimentConfig) -> float:
    """The loss weights' lr as a multiple of the network lr (the schedule scales both alike)."""
    return 1.0 if cfg.loss.weights_lr is None else cfg.loss.weights_lr / cfg.optim.lr


def amp_dtype(cfg: ExperimentConfig, device: str) -> torch.dtype | None:
    """``None`` = full precision. ``auto`` picks bf16 on GPUs that support it (fp16 otherwise), off on CPU."""
    mode = cfg.train.amp
    if not device.startswith("cuda"):
        if mode in ("bf16", "fp16"):
            log.warning("train.amp=%s ignored on %s (AMP is for GPUs); training in fp32", mode, device)
        return None
    if mode == "off":
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if mode == "bf16" else torch.float16


# --------------------------------------------------------------------------------------------- model + loss
class AuxHeads(nn.Module):
    """Per-camera auxiliary pose heads for gradient blending on late-fusion models.

    A forward hook on the model's per-camera encoder (``model.net.per_camera``) captures each camera's features
    before fusion; head ``k`` regresses the rig pose (normalised ``t`` and raw ``q``) from camera ``k`` alone.
    The heads are training-only: they are not part of the saved model (the node never runs them).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        net = getattr(model, "net", None)
        per_camera = getattr(net, "per_camera", None)
        missing = getattr(net, "missing", None)
        if per_camera is None or missing is None:
            raise ConfigError("loss.gradient_blending.enabled needs a late-fusion model (model.fusion.position: "
                              "late) whose per-camera branches can carry auxiliary heads")
        dim = sum(int(p.numel()) for p in missing)
        self.num_streams = int(model.num_cameras)
        self.heads = nn.ModuleList(nn.Linear(dim, 7) for _ in range(self.num_streams))
        self._features: list[torch.Tensor] | None = None
        per_camera.register_forward_hook(self._capture)

    def _capture(self, _module: nn.Module, _inp: Any, out: Any) -> None:
        self._features = list(out) if isinstance(out, (list, tuple)) else [out]

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(t_norm (B,K,3), q (B,K,4))`` from the features captured in the last model forward."""
        if self._features is None:
            raise RuntimeError("AuxHeads called before a model forward")
        f = torch.cat([x.float() for x in self._features], dim=-1)  # (B, T, D)
        raw = torch.stack([h(f[:, k]) for k, h in enumerate(self.heads)], dim=1)
        q = raw[..., 3:]
        q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return raw[..., :3], q


class TrainStep(nn.Module):
    """Model + criterion (+ gradient-blending aux heads) as one module, so DDP synchronises all of them."""

    def __init__(self, model: nn.Module, criterion: PoseLoss, blender: GradientBlender | None = None,
                 amp: torch.dtype | None = None) -> None:
        super().__init__()
        self.model = model
        self.criterion = criterion
        self.aux = AuxHeads(model) if blender is not None else None
        self.blender = blender
        self.amp = amp

    @staticmethod
    def flatten(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``(B,S,…)`` tuple batches → ``(B·S,…)`` bundles; also accepts single bundles ``(B,T,3,H,W)``."""
        images, mask, t, q = batch["images"], batch["mask"], batch["t"], batch["q"]
        if images.dim() == 5:
            images, mask, t, q = images[:, None], mask[:, None], t[:, None], q[:, None]
        b, s = images.shape[:2]
        return (images.reshape(b * s, *images.shape[2:]), mask.reshape(b * s, -1).bool(),
                t.reshape(b * s, 3).double(), q.reshape(b * s, 4).float(), torch.tensor(s))

    def normalize_t(self, t: torch.Tensor) -> torch.Tensor:
        """World positions (float64, possibly large) → the model's normalised frame, float32 for the loss."""
        return ((t.double() - self.model.t_mean) / self.model.t_scale.double()).float()  # t_mean is float64

    def predict(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        device_type = images.device.type
        with torch.autocast(device_type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            return self.model(images, mask)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        images, mask, t, q, s = self.flatten(batch)
        steps = int(s)
        out = self.predict(images, mask)
        t_gt_norm = self.normalize_t(t)
        cam_t = cam_q = None
        if "per_camera_t_norm" in out:
            ct, cam_q = camera_ground_truth(t, q.double(), self.model.ext_t.double(), self.model.ext_q.double())
            cam_t, cam_q = self.normalize_t(ct), cam_q.float()
        if self.blender is None:
            return self.criterion(out, t_gt_norm, q, steps, cam_t, cam_q, mask)
        # Gradient blending: Σ w_k L_stream_k + w_fused L_fused (+ the relative term, unweighted).
        stream, fused = self._stream_losses(out, t_gt_norm, q)
        total = self.blender.combine(stream, fused)
        parts = {"loss_abs": float(fused.detach()), **{f"loss_stream{k}": float(v) for k, v in
                                                        enumerate(stream.detach())}}
        if self.criterion.relative is not None and steps > 1:
            rel = self.criterion.relative_loss(out["t_norm"].float(), out["q"].float(), t_gt_norm, q, steps)
            total = total + self.criterion.settings.relative_weight * rel
            parts["loss_rel"] = float(rel.detach())
        parts["sx"], parts["sq"] = float(self.criterion.absolute.sx.detach()), float(
            self.criterion.absolute.sq.detach())
        for k, w in enumerate(self.blender.weights):
            parts[f"gb_w{k}"] = float(w)
        parts["loss"] = float(total.detach())
        return total, parts

    def _stream_losses(self, out: dict[str, torch.Tensor], t_gt_norm: torch.Tensor, q: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.aux is not None
        crit = self.criterion
        d_t, d_q = crit.distances(out["t_norm"].float(), out["q"].float(), t_gt_norm, q)
        fused = crit.absolute(d_t.mean(), d_q.mean())
        at, aq = self.aux()
        k = at.shape[1]
        sd_t, sd_q = crit.distances(at, aq, t_gt_norm[:, None].expand(-1, k, 3), q[:, None].expand(-1, k, 4))
        stream = torch.stack([crit.absolute(sd_t[:, i].mean(), sd_q[:, i].mean()) for i in range(k)])
        return stream, fused

    @torch.no_grad()
    def measure_streams(self, batch: dict[str, torch.Tensor]) -> list[float]:
        """Per-stream + fused losses on one batch (for the blending weights), no gradient."""
        images, mask, t, q, _ = self.flatten(batch)
        out = self.predict(images, mask)
        stream, fused = self._stream_losses(out, self.normalize_t(t), q)
        return [float(x) for x in stream] + [float(fused)]


def loss_settings(cfg: ExperimentConfig, model: nn.Module) -> LossSettings:
    """``cfg.loss`` with the model-dependent defaults filled (rotation representation, mix-stream weights). A model
    that predicts its variance (``model.predict_variance``) is trained with the heteroscedastic NLL: one setting."""
    lc = cfg.loss
    return lc.for_model(getattr(model, "rotation_repr", "quat"), bool(getattr(model, "mix_stream", False)))


# --------------------------------------------------------------------------------------------- state (no pickle)
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Global RNG states split into tensors and JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py = random.getstate()
    return tensors, {"numpy": [name, int(pos), int(has_gauss), float(cached)],
                     "python": [py[0], list(py[1]), py[2]]}


def set_rng_state(tensors: dict[str, torch.Tensor], doc: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"].to(torch.uint8))
    if "rng.cuda" in tensors and torch.cuda.is_available():
        states = list(tensors["rng.cuda"].to(torch.uint8))
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    name, pos, has_gauss, cached = doc["numpy"]
    np.random.set_state((name, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    v, internal, gauss = doc["python"]
    random.setstate((v, tuple(internal), gauss))


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` with tensors → safetensors keys ``optim.<param>.<name>``, the rest JSON."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = v
            else:
                scalars.setdefault(str(pid), {})[name] = v
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], doc: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for pid, sc in doc["scalars"].items():
        state.setdefault(int(pid), {}).update(sc)
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in doc["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})


# --------------------------------------------------------------------------------------------- logging
class ScalarLog:
    """TensorBoard scalars + a long-format CSV (``step,epoch,name,value``) in the run folder; rank 0 only."""

    def __init__(self, out_dir: Path, tensorboard: bool, resume_step: int | None = None) -> None:
        self.csv_path = out_dir / "scalars.csv"
        if resume_step is not None and self.csv_path.exists():
            # Drop rows logged after the checkpoint we resume from: they will be logged again.
            with self.csv_path.open() as f:
                rows = [r for r in csv.reader(f)]
            keep = [rows[0]] + [r for r in rows[1:] if r and int(r[0]) <= resume_step]
            atomic_write_text(self.csv_path, "".join(",".join(r) + "\n" for r in keep))
        new = not self.csv_path.exists()
        self._f = self.csv_path.open("a", newline="")
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(["step", "epoch", "name", "value"])
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out_dir / "tb"), purge_step=resume_step)
            except ImportError as e:  # pragma: no cover - tensorboard is in requirements
                log.warning("TensorBoard logging disabled (%s); the CSV log is still written", e)

    def add(self, step: int, epoch: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            if value is None or not math.isfinite(float(value)):
                continue
            self._w.writerow([step, epoch, name, f"{float(value):.8g}"])
            if self.tb is not None:
                self.tb.add_scalar(name, float(value), step)
        self._f.flush()

    def close(self) -> None:
        self._f.close()
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------------------------- the trainer
@dataclass
class _Throughput:
    """Images seen since the last logged step and when that was (for the images/s scalar)."""

    t_last: float = field(default_factory=time.perf_counter)
    images: int = 0


class Trainer:
    """Runs one experiment: ``Trainer(cfg, model, train_set, val_set, out_dir, meta_fn).fit(resume=...)``.

    ``train_set`` items are dicts with ``images (S,T,3,H,W)``, ``mask (S,T)``, ``t (S,3)``, ``q (S,4)``;
    ``val_set`` items the same with ``S = 1`` (or without the S axis). ``meta_fn(model, provenance) -> meta`` builds
    the checkpoint meta (``mfapr_ros.models.model_meta`` with the rig and preprocessing bound).

    Over 300 lines on purpose: the loop, validation, checkpointing and resume all read and advance the same run
    state (step, epoch, position, best, optimizer/scaler/blender); split across classes, that state would be passed
    around or duplicated, and resume bugs live exactly there. Each method is one named step of the loop.
    """

    def __init__(self, cfg: ExperimentConfig, model: nn.Module, train_set: Dataset, val_set: Dataset | None,
                 out_dir: str | Path, meta_fn: Callable[[nn.Module, dict[str, Any]], dict[str, Any]],
                 info: DistInfo | None = None, provenance: dict[str, Any] | None = None) -> None:
        self.cfg = cfg
        self.info = info or DistInfo()
        self.device = self.info.device
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.meta_fn = meta_fn
        self.provenance = dict(provenance or {})
        self.model = model.to(self.device)
        self.amp = amp_dtype(cfg, self.device)
        gb = cfg.loss.gradient_blending
        self.blender = GradientBlender(int(model.num_cameras)) if gb.enabled else None
        self.criterion = PoseLoss(loss_settings(cfg, model)).to(self.device)
        self.step_module = TrainStep(self.model, self.criterion, self.blender, self.amp).to(self.device)
        self.train_set = SeededDataset(train_set, cfg.train.seed)
        self.val_set = val_set
        self.optimizer = make_optimizer([p for p in self.step_module.parameters() if p.requires_grad], cfg,
                                        [p for p in self.criterion.parameters() if p.requires_grad])
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == torch.float16 else None
        self.ddp: nn.Module = self.step_module
        if self.info.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [torch.device(self.device).index] if self.device.startswith("cuda") else None
            self.ddp = DistributedDataParallel(self.step_module, device_ids=ids,
                                              find_unused_parameters=bool(model.config.get("predict_variance")))
        self.batches_per_epoch = len(epoch_batches(len(self.train_set), cfg.train.batch_size, cfg.train.seed, 0,
                                                   self.info))
        by_epochs = cfg.train.epochs * self.batches_per_epoch
        self.total_steps = min(by_epochs, cfg.train.max_steps) if cfg.train.max_steps else by_epochs
        # progress
        self.global_step = 0
        self.epoch = 0
        self.pos = 0  # batches of the current epoch already consumed
        self.best: float | None = None
        self.history: list[dict[str, Any]] = []
        self.health: dict[str, Any] | None = None  # the last validation pass's health report (training/health.py)
        self.health_warnings: list[str] = []

    # ------------------------------------------------------------------ checkpoints
    def _meta(self, extra: dict[str, Any]) -> dict[str, Any]:
        prov = {**self.provenance, "training_config": self.cfg.to_dict(), "step": self.global_step,
                "epoch": self.epoch, **extra}
        return self.meta_fn(self.model, prov)

    def save(self, val: dict[str, Any] | None = None) -> Path:
        """Write ``step_N`` model + state, then ``latest.json``; prune to ``keep_last``. Rank 0 only."""
        name = f"step_{self.global_step:08d}"
        meta = self._meta({"val": val} if val else {})
        tensors: dict[str, torch.Tensor] = {f"loss.{k}": v for k, v in self.criterion.state_dict().items()}
        if self.step_module.aux is not None:
            tensors.update({f"aux.{k}": v for k, v in self.step_module.aux.state_dict().items()})
        ot, odoc = optimizer_state(self.optimizer)
        rt, rdoc = rng_state()
        tensors.update(ot)
        tensors.update(rt)
        state_meta = {**meta, "kind": STATE_FORMAT, "epoch": self.epoch, "pos": self.pos,
                      "global_step": self.global_step, "best": self.best, "optimizer": odoc, "rng": rdoc,
                      "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                      "blender": self.blender.state_dict() if self.blender is not None else None,
                      "history": self.history[-200:]}
        save_checkpoint(self.ckpt_dir / f"{name}.state", tensors, state_meta)
        model_json = save_checkpoint(self.ckpt_dir / name, self.model, meta)
        atomic_write_json(self.ckpt_dir / "latest.json", {"step": self.global_step, "model": name,
                                                          "state": f"{name}.state"})
        self._prune()
        return model_json

    def _prune(self) -> None:
        names = sorted(p.name[:-len(".json")] for p in self.ckpt_dir.glob("step_*.json")
                       if not p.name.endswith(".state.json"))
        for old in names[:-self.cfg.train.keep_last]:
            for suffix in (".json", ".safetensors", ".state.json", ".state.safetensors"):
                (self.ckpt_dir / f"{old}{suffix}").unlink(missing_ok=True)

    def load_latest(self) -> bool:
        """Restore everything from ``checkpoints/latest.json``; False when there is nothing to resume."""
        pointer = self.ckpt_dir / "latest.json"
        if not pointer.exists():
            return False
        import json

        doc = json.loads(pointer.read_text())
        model_ck = load_checkpoint(self.ckpt_dir / doc["model"])
        state_ck = load_checkpoint(self.ckpt_dir / doc["state"])
        if state_ck.meta.get("kind") != STATE_FORMAT:
            raise CheckpointError(f"{state_ck.path}: not a trainer state file")
        if state_ck.meta["model"].get("backbone") != self.model.config.get("backbone"):
            raise CheckpointError(f"{state_ck.path}: was written for backbone {state_ck.meta['model'].get('backbone')}"
                                  f", the config builds {self.model.config.get('backbone')}; use a fresh --out")
        self.model.load_state_dict({k: v.to(self.device) for k, v in model_ck.state_dict.items()})
        st = state_ck.state_dict
        self.criterion.load_state_dict({k[5:]: v.to(self.device) for k, v in st.items() if k.startswith("loss.")})
        if self.step_module.aux is not None:
            self.step_module.aux.load_state_dict({k[4:]: v.to(self.device) for k, v in st.items()
                                                  if k.startswith("aux.")})
        m = state_ck.meta
        load_optimizer_state(self.optimizer, {k: v.to(self.device) for k, v in st.items() if k.startswith("optim.")},
                             m["optimizer"])
        if self.scaler is not None and m.get("scaler"):
            self.scaler.load_state_dict(m["scaler"])
        if self.blender is not None and m.get("blender"):
            self.blender.load_state_dict(m["blender"])
        set_rng_state(st, m["rng"])
        self.epoch, self.pos, self.global_step = int(m["epoch"]), int(m["pos"]), int(m["global_step"])
        self.best = m.get("best")
        self.history = list(m.get("history", []))
        return True

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def predict(self, dataset: Dataset) -> dict[str, np.ndarray]:
        """Poses for a dataset in order (``t``, ``q`` estimates and ground truth); RNG-neutral."""
        self.model.eval()
        bs = self.cfg.train.batch_size * max(1, self.cfg.data.steps)
        batches = [list(range(i, min(i + bs, len(dataset)))) for i in range(0, len(dataset), bs)]
        t_est, q_est, t_gt, q_gt = [], [], [], []
        with torch.random.fork_rng(devices=[]):
            for batch in make_loader(dataset, batches, self.cfg.data.num_workers, 0, self.device):
                images, mask, t, q, _ = TrainStep.flatten(batch)
                out = self.step_module.predict(images.to(self.device, non_blocking=True), mask.to(self.device))
                t_est.append(out["t"].double().cpu())
                q_est.append(out["q"].float().cpu())
                t_gt.append(t)
                q_gt.append(q)
        self.model.train()
        cat = lambda xs: torch.cat(xs).double().numpy() if xs else np.zeros((0, 3))
        return {"t_est": cat(t_est), "q_est": cat(q_est), "t_gt": cat(t_gt), "q_gt": cat(q_gt)}

    def validate(self) -> dict[str, Any] | None:
        if self.val_set is None or len(self.val_set) == 0:
            return None
        from mfapr_ros.evaluation import compute_metrics

        with HeadProbe(self.model) as probe:
            p = self.predict(self.val_set)
        m = compute_metrics(p["t_gt"], p["q_gt"], p["t_est"], p["q_est"])
        health = health_report(p, probe.dead_shares())
        for w in health["warnings"]:
            log.warning("step %d: TRAINING HEALTH: %s", self.global_step, w)
            self.health_warnings.append(f"step {self.global_step}: {w}")
        self.health = health
        return {"median_t": m["translation_m"]["median"], "median_r": m["rotation_deg"]["median"],
                "mean_t": m["translation_m"]["mean"], "mean_r": m["rotation_deg"]["mean"],
                **{f"recall_{k}": v for k, v in m["recall"].items()}, "count": m["count"],
                "position_std_pred_m": health["position_std_pred_m"], "yaw_std_pred_deg": health["yaw_std_pred_deg"],
                **{f"dead_{k}": v for k, v in health["dead_units"].items()}}

    def _score(self, val: dict[str, Any]) -> float:
        key = self.cfg.train.best_metric
        median_sum = float(val["median_t"]) + float(val["median_r"]) / 10.0
        if key == "median_sum":
            return median_sum
        if key == "recall":
            return 1.0 - float(val["recall_0.5m_5deg"]) + median_sum / 1000.0
        return float(val[key])

    # ------------------------------------------------------------------ gradient blending
    def _blend_update(self, batches: list[list[int]]) -> None:
        assert self.blender is not None
        gb = self.cfg.loss.gradient_blending
        if self.val_set is None:
            raise ConfigError("gradient blending needs a held-out split: set data.val_split")
        self.model.eval()
        with torch.random.fork_rng(devices=[]):
            tr = self._mean_streams(self.train_set, batches[:gb.batches])
            n = len(self.val_set)
            bs = self.cfg.train.batch_size
            vb = [list(range(i, min(i + bs, n))) for i in range(0, n, bs)][:gb.batches]
            va = self._mean_streams(self.val_set, vb)
        self.model.train()
        self.blender.update(self.global_step, tr, va)

    def _mean_streams(self, dataset: Dataset, batches: list[list[int]]) -> list[float]:
        rows = [self.step_module.measure_streams(self._to_device(b))
                for b in make_loader(dataset, batches, 0, 0, self.device)]
        return [float(np.mean(col)) for col in zip(*rows, strict=True)]

    # ------------------------------------------------------------------ loop
    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: (v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                for k, v in batch.items()}

    def fit(self, resume: bool = False, stop_after: int | None = None) -> dict[str, Any]:
        """Train to ``total_steps``; ``stop_after`` ends early after that many steps of this call (tests)."""
        cfg, info = self.cfg, self.info
        writer = self._start(resume)
        self.model.train()
        steps_this_call = 0
        meter = _Throughput()
        bar = self._bar(info)
        try:
            while self.global_step < self.total_steps:
                batches = epoch_batches(len(self.train_set), cfg.train.batch_size, cfg.train.seed, self.epoch, info)
                self.train_set.epoch = self.epoch
                loader = make_loader(self.train_set, batches[self.pos:], cfg.data.num_workers,
                                     cfg.train.seed + self.epoch, self.device)
                for batch in loader:
                    parts, lr, images = self._train_step(batch, batches)
                    steps_this_call += 1
                    meter.images += images
                    end_of_epoch = self.pos >= len(batches)
                    # the final step is always logged: a run shorter than log_every still records its loss
                    if (self.global_step % cfg.train.log_every == 0 or end_of_epoch
                            or self.global_step >= self.total_steps):
                        self._log_step(parts, lr, meter, writer, bar)
                    if bar is not None:
                        bar.update(1)
                    last = self._after_step(writer, end_of_epoch)
                    if last or (stop_after is not None and steps_this_call >= stop_after):
                        break
                if self.global_step >= self.total_steps or (stop_after is not None and steps_this_call >= stop_after):
                    break
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        return self._finish()

    def _start(self, resume: bool) -> ScalarLog | None:
        """Resume (or seed a fresh run), and on the main process write the resolved config and open the log."""
        cfg, info = self.cfg, self.info
        resumed = self.load_latest() if resume else False
        if not resumed:
            seed = cfg.train.seed + info.rank
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        writer = None
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.yaml", dump_yaml(cfg))
            writer = ScalarLog(self.out, cfg.train.tensorboard, self.global_step if resumed else None)
            if resumed:
                log.info("resumed from step %d (epoch %d, batch %d)", self.global_step, self.epoch, self.pos)
        return writer

    def _train_step(self, batch: dict[str, Any], batches: list[Any]) -> tuple[dict[str, float], float, int]:
        """One optimizer step on ``batch``; returns the loss parts, the learning rate and the images it saw (all
        processes), and advances ``global_step`` / ``pos``."""
        cfg = self.cfg
        if (self.blender is not None and self.global_step % cfg.loss.gradient_blending.every_steps == 0):
            self._blend_update(batches)
        lr = lr_at(self.global_step, cfg, self.total_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)
        self.criterion.step = self.global_step
        batch = self._to_device(batch)
        loss, parts = self.ddp(batch)
        self.optimizer.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            raise DataError(f"loss became {float(loss)} at step {self.global_step} (epoch {self.epoch}); "
                            "lower optim.lr, enable train.grad_clip or check the poses of this data")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if cfg.train.grad_clip:
            parts["grad_norm"] = float(nn.utils.clip_grad_norm_(self.step_module.parameters(), cfg.train.grad_clip))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.global_step += 1
        self.pos += 1
        return parts, lr, int(batch["mask"].sum()) * self.info.world_size

    def _log_step(self, parts: dict[str, float], lr: float, meter: _Throughput, writer: ScalarLog | None,
                  bar: Any) -> None:
        """The logged training scalars of this step (loss averaged over processes, throughput since the last log)."""
        parts["loss"] = all_reduce_mean(parts["loss"], self.info)
        now = time.perf_counter()
        parts["images_per_s"] = meter.images / max(now - meter.t_last, 1e-9)
        meter.t_last, meter.images = now, 0
        parts["lr"] = lr
        if writer is not None:
            writer.add(self.global_step, self.epoch, {f"train/{k}": v for k, v in parts.items()})
        if bar is not None:
            bar.set_postfix(loss=f"{parts['loss']:.3f}", img_s=f"{parts['images_per_s']:.1f}",
                            lr=f"{lr:.2e}", epoch=self.epoch)

    def _after_step(self, writer: ScalarLog | None, end_of_epoch: bool) -> bool:
        """Epoch bookkeeping, then validation / checkpoint when due; returns whether this was the last step."""
        cfg = self.cfg
        if end_of_epoch:
            self.epoch, self.pos = self.epoch + 1, 0
        last = self.global_step >= self.total_steps
        # a step interval, when set, replaces the epoch cadence (a 20-bundle set trained for 150
        # epochs must not write 150 checkpoints); the last step always validates and checkpoints
        do_val = last or (self.global_step % cfg.train.val_every == 0 if cfg.train.val_every else end_of_epoch)
        do_ckpt = last or (self.global_step % cfg.train.ckpt_every == 0 if cfg.train.ckpt_every else end_of_epoch)
        self._boundary(writer, bool(do_val), bool(do_ckpt))
        return last

    def _finish(self) -> dict[str, Any]:
        """The run summary; a completed run also writes ``last`` and ``summary.json`` (main process)."""
        summary = {"global_step": self.global_step, "epoch": self.epoch, "best": self.best,
                   "history": self.history, "health": self.health, "health_warnings": self.health_warnings}
        if self.info.is_main and self.global_step >= self.total_steps:
            save_checkpoint(self.out / "last", self.model, self._meta({"final": True}))
            atomic_write_json(self.out / "summary.json", summary)
        barrier(self.info)
        return summary

    def _boundary(self, writer: ScalarLog | None, do_val: bool, do_ckpt: bool) -> None:
        """Validation, best-model and checkpoint writes (rank 0) at a step boundary; all ranks wait."""
        if not (do_val or do_ckpt):
            return
        val = None
        if self.info.is_main:
            if do_val:
                val = self.validate()
                if val is not None:
                    self.history.append({"step": self.global_step, "epoch": self.epoch, **val})
                    if writer is not None:
                        writer.add(self.global_step, self.epoch, {f"val/{k}": v for k, v in val.items()})
                    score = self._score(val)
                    if self.best is None or score < self.best:
                        self.best = score
                        save_checkpoint(self.out / "best", self.model, self._meta({"val": val, "best": score}))
                    log.info("step %d: val median %.3f m / %.2f° (best %s %.4f)", self.global_step,
                             val["median_t"], val["median_r"], self.cfg.train.best_metric, self.best)
            if do_ckpt:
                self.save(val)
        barrier(self.info)

    def _bar(self, info: DistInfo) -> Any:
        if not (info.is_main and self.cfg.train.progress):
            return None
        from mfapr_ros.core.progress import progress  # a bar on a terminal, one plain line per interval in a log

        return progress(self.total_steps, self.cfg.name, "step", initial=self.global_step)


def iterate_once(dataset: Dataset, batch_size: int) -> Iterator[dict[str, Any]]:
    """All items of ``dataset`` in order, batched (used by evaluation)."""
    batches = [list(range(i, min(i + batch_size, len(dataset)))) for i in range(0, len(dataset), batch_size)]
    yield from make_loader(dataset, batches, 0, 0, "cpu")


__all__ = ["AuxHeads", "ScalarLog", "SeededDataset", "TrainStep", "Trainer", "amp_dtype", "epoch_batches",
           "iterate_once", "loss_settings", "lr_at", "make_optimizer"]

