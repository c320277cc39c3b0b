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

This file is the run (:class:`Trainer`) and its scalar log; the pieces it drives each read top to bottom in their
own module: :mod:`.batches` (data order), :mod:`.optim` (optimizer, schedule, AMP), :mod:`.step` (model + loss as
one DDP module), :mod:`.state` (RNG and optimizer state without pickle).
"""

from __future__ import annotations

import csv
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from mfapr_ros.core.checkpoint import load_checkpoint, save_checkpoint
from mfapr_ros.core.errors import CheckpointError, ConfigError, DataError
from mfapr_ros.core.io import atomic_write_json, atomic_write_text

from .batches import SeededDataset, epoch_batches, make_loader
from .config import ExperimentConfig, dump_yaml
from .distributed import DistInfo, all_reduce_mean, barrier
from .gradient_blending import GradientBlender
from .health import HeadProbe, health_report
from .losses import PoseLoss
from .optim import amp_dtype, lr_at, make_optimizer
from .state import load_optimizer_state, optimizer_state, rng_state, set_rng_state
from .step import TrainStep, loss_settings

log = logging.getLogger("mfapr_training")

STATE_FORMAT = "mfapr_training.state"


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
        health = health_report(p, probe.dead_shares(), previous=self.health,
                               final=self.global_step >= self.total_steps)
        for note in health["pending"]:
            log.info("step %d: training health: %s", self.global_step, note)
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


