"""The training engine on a toy dataset: loss decreases, checkpoints load as models, resume after SIGKILL is
bit-for-bit, DDP runs with 2 gloo processes, configs validate and override.

This file doubles as the child-process script (``python test_training.py child|ddp OUT``) so the kill and
torchrun tests run the real engine in a separate process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mfapr_training.batches import SeededDataset, epoch_batches
from mfapr_training.config import ExperimentConfig, apply_overrides, load_config, parse_override
from mfapr_training.engine import Trainer
from mfapr_training.optim import lr_at

from mfapr_ros.core.errors import ConfigError, DataError
from mfapr_ros.core.preprocess import PreprocessConfig
from mfapr_ros.core.rig import ring_rig

REPO = Path(__file__).resolve().parents[2]
PX = 32


class ToyTuples(torch.utils.data.Dataset):
    """Tuples along a straight track; each image's colour encodes the position, plus a random (augmentation) noise
    drawn from the global RNGs — exactly what :class:`SeededDataset` must make reproducible."""

    def __init__(self, n: int = 24, steps: int = 2, cams: int = 4) -> None:
        self.n, self.steps, self.cams = n, steps, cams
        k = torch.arange(n + steps, dtype=torch.float32)
        self.t = torch.stack([k * 0.5, torch.sin(k * 0.3), torch.zeros_like(k)], -1)
        yaw = k * 0.05
        self.q = torch.stack([torch.cos(yaw / 2), torch.zeros_like(yaw), torch.zeros_like(yaw), torch.sin(yaw / 2)], -1)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        idx = torch.arange(i, i + self.steps)
        base = (self.t[idx, :3] / 10.0)[:, None, :, None, None]  # (S,1,3,1,1)
        images = base.expand(self.steps, self.cams, 3, PX, PX) + 0.05 * torch.randn(self.steps, self.cams, 3, PX, PX)
        images = images + float(np.random.uniform(-0.01, 0.01))
        return {"images": images, "mask": torch.ones(self.steps, self.cams, dtype=torch.bool), "t": self.t[idx],
                "q": self.q[idx]}


def toy_config(**train: object) -> ExperimentConfig:
    doc = {"name": "toy", "data": {"steps": 2}, "preprocess": {"resize": PX, "crop": PX},
           "model": {"preset": "tiny"}, "loss": {"relative_weight": 1.0},
           "optim": {"lr": 3e-3}, "schedule": {"name": "cosine", "warmup_steps": 2},
           "train": {"epochs": 2, "batch_size": 4, "log_every": 2, "progress": False, "tensorboard": False,
                     **train}}
    return ExperimentConfig.from_dict(doc)


def make_trainer(out: Path, cfg: ExperimentConfig, info: object = None) -> Trainer:
    from mfapr_ros.models import build_model, model_meta, preset

    torch.manual_seed(0)
    rig = ring_rig(4)
    model = build_model(preset("tiny", image_size=PX, pose_normalization={"t_mean": [5.0, 0.0, 0.0], "t_scale": 4.0}))
    pre = PreprocessConfig(resize=PX, crop=PX)
    kw = {"info": info} if info is not None else {}
    return Trainer(cfg, model, ToyTuples(), ToyTuples(8, steps=1), out,
                   lambda m, prov: model_meta(m, rig, pre, prov), **kw)


def weights_of(path: Path) -> dict[str, torch.Tensor]:
    from mfapr_ros.core.checkpoint import load_checkpoint

    return load_checkpoint(path).state_dict


# --------------------------------------------------------------------------------------------- unit
def test_schedule_warmup_cosine_and_step() -> None:
    cfg = ExperimentConfig.from_dict({"optim": {"lr": 1.0}, "schedule": {"name": "cosine", "warmup_steps": 4}})
    assert [lr_at(s, cfg, 14) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_at(4, cfg, 14) == pytest.approx(1.0)
    assert lr_at(9, cfg, 14) == pytest.approx(0.5)  # half-way through the 10 cosine steps
    assert lr_at(14, cfg, 14) == pytest.approx(0.0, abs=1e-12)
    cfg = ExperimentConfig.from_dict({"optim": {"lr": 1.0}, "schedule": {"name": "step", "step_size": 3,
                                                                          "gamma": 0.5}})
    assert [lr_at(s, cfg, 10) for s in (0, 2, 3, 6)] == pytest.approx([1.0, 1.0, 0.5, 0.25])


def test_epoch_batches_are_a_function_of_seed_and_epoch() -> None:
    from mfapr_training.distributed import DistInfo

    a = epoch_batches(10, 3, seed=1, epoch=0, info=DistInfo())
    assert a == epoch_batches(10, 3, seed=1, epoch=0, info=DistInfo())
    assert a != epoch_batches(10, 3, seed=1, epoch=1, info=DistInfo())
    assert len(a) == 3 and all(len(b) == 3 for b in a)
    r0 = epoch_batches(10, 2, 1, 0, DistInfo(0, 2))
    r1 = epoch_batches(10, 2, 1, 0, DistInfo(1, 2))
    assert not set(sum(r0, [])) & set(sum(r1, []))  # ranks see disjoint samples
    with pytest.raises(DataError, match="batch_size"):
        epoch_batches(3, 4, 0, 0, DistInfo())


def test_seeded_dataset_is_reproducible_and_rng_neutral() -> None:
    ds = SeededDataset(ToyTuples(), seed=3)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = ds[5]["images"]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a, ds[5]["images"])
    ds.epoch = 1
    assert not torch.equal(a, ds[5]["images"])


def test_config_overrides_and_errors(tmp_path: Path) -> None:
    assert parse_override("optim.lr=3e-4") == (["optim", "lr"], pytest.approx(3e-4))
    assert parse_override("data.cameras=[a, b]")[1] == ["a", "b"]
    base = tmp_path / "base.yaml"
    base.write_text("name: base\noptim: {lr: 0.1, weight_decay: 0.0}\ntrain: {epochs: 3}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nname: child\noptim: {lr: 0.2}\n")
    cfg = load_config(child, ["train.batch_size=2", "data.root=/data/naver"])
    assert (cfg.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.train.epochs) == ("child", 0.2, 0.0, 3)
    assert cfg.train.batch_size == 2 and cfg.data.root == "/data/naver"
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        load_config(child, ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(child, ["train.amp=fp8"])
    # YAML 1.1 reads `off` as false: the setting whose choices include "off" takes it as "off" (the tiny demo's
    # `--set train.amp=off`); true is still an error
    assert load_config(child, ["train.amp=off"]).train.amp == "off"
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(child, ["train.amp=on"])
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(child, ["train.batch_size=0"])
    with pytest.raises(ConfigError, match="data.steps >= 2"):
        load_config(child, ["loss.relative_weight=1", "data.steps=1"])
    with pytest.raises(ConfigError, match="must be int"):
        load_config(child, ["train.epochs=two"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["x"])


def test_shipped_configs_validate() -> None:
    files = sorted((REPO / "training" / "configs").rglob("*.yaml"))
    assert len(files) >= 10
    from mfapr_training.train import model_config

    from mfapr_ros.models import resolve_config

    for f in files:
        cfg = load_config(f, ["data.root=/nonexistent"])
        rig = ring_rig(6 if cfg.data.cameras == "basler" else 4)
        resolved = resolve_config(model_config(cfg, rig, {"t_mean": [0.0, 0.0, 0.0], "t_scale": 2.0}))
        assert resolved["num_cameras"] == rig.num_cameras and resolved["image_size"] == cfg.preprocess.crop
    paper = {f.stem: load_config(f) for f in files if f.parent.name == "paper"}
    assert paper["table1_mixstream_mapnet"].model["fusion"]["position"] == "none"
    assert paper["table3_relative_off"].loss.relative is False and paper["table3_relative_on"].loss.relative
    assert paper["table5_basler"].data.cameras == "basler"


def test_config_schema_one_name_per_setting(caplog: pytest.LogCaptureFixture) -> None:
    """The model section is checked against its backbone's default_conf at load; data-bound model keys are
    refused; the loss's rotation *distance* has its own name (the old `loss.rotation` is read with one deprecation
    line); removed keys fail as unknown."""
    with pytest.raises(ConfigError, match=r"model\.nm_anchors.*backbone 'mapnet'"):
        load_config("demo", ["model.nm_anchors=4"])  # demo preset: backbone mapnet
    with pytest.raises(ConfigError, match=r"model\.heads.*'transposenet'"):  # ViT's old name, not TransPoseNet's
        load_config("demo", ["model.preset=transposenet", "model.heads=4"])
    assert load_config("demo", ["model.preset=vit_small", "model.num_heads=6"]).model["num_heads"] == 6
    with pytest.raises(ConfigError, match=r"model\.num_cameras.*set by training"):
        load_config("demo", ["model.num_cameras=4"])
    with caplog.at_level("WARNING", logger="mfapr_training"):
        old = load_config("demo", ["loss.rotation=geodesic"])
    assert old.loss.rotation_distance == "geodesic" and "'loss.rotation' is deprecated" in caplog.text
    assert old == load_config("demo", ["loss.rotation_distance=geodesic"])
    with pytest.raises(ConfigError, match="same setting"):  # in one file or mapping: which one is meant?
        ExperimentConfig.from_dict({"loss": {"rotation": "quat", "rotation_distance": "logq"}})
    for gone in ("loss.auto_init=true", "loss.per_camera_weight=1", "optim.eps=1e-8", "optim.betas=[0.9, 0.99]",
                 "train.val_batches=2", "data.test_split=query", "loss.gradient_blending.min_delta_o=0.1",
                 "loss.heteroscedastic=true"):  # = model.predict_variance (the NLL trains the predicted variance)
        with pytest.raises(ConfigError, match="unknown key"):
            load_config("demo", [gone])


@pytest.mark.parametrize(("old", "new"), [
    ({"relative": True}, {"relative_weight": 1.0}),  # the old default weight
    ({"relative": True, "relative_weight": 0.5}, {"relative_weight": 0.5}),
    ({"relative": False, "relative_weight": 0.5}, {"relative_weight": 0.0}),
    ({"learn_weights": False}, {"weights_lr": 0.0}),
    ({"learn_weights": True, "weights_lr": 1e-3}, {"weights_lr": 1e-3}),
    ({"gradient_blending": {"enabled": True}}, {"gradient_blending": {"every_steps": 200}}),
    ({"gradient_blending": {"enabled": False, "every_steps": 50}}, {"gradient_blending": {"every_steps": 0}}),
])
def test_folded_switches_read_as_their_numbers(old: dict, new: dict, caplog: pytest.LogCaptureFixture) -> None:
    """The old on/off switches (loss.relative, loss.learn_weights, loss.gradient_blending.enabled) are one setting
    with the number they gated (0 = off): still read, with one deprecation line, as exactly that number."""
    with caplog.at_level("WARNING", logger="mfapr_training"):
        got = ExperimentConfig.from_dict({"data": {"steps": 3}, "loss": old})
    assert got == ExperimentConfig.from_dict({"data": {"steps": 3}, "loss": new})
    assert caplog.text.count("is deprecated") == 1
    on = {"relative": got.loss.relative, "learn_weights": got.loss.learn_weights,
          "gradient_blending": got.loss.gradient_blending.enabled}
    for k, v in old.items():
        if k in on:
            assert on[k] == (v if isinstance(v, bool) else v["enabled"])
    with pytest.raises(ConfigError, match="true or false"):
        ExperimentConfig.from_dict({"loss": {"relative": 0.5}})


def test_default_switches_are_off_and_keys_counted() -> None:
    """Defaults unchanged in behaviour (relative loss and gradient blending off, loss weights learned at optim.lr);
    the key count of docs/architecture.md (bench/config_keys.py) stays at or under 80 (issue 24: 101 before)."""
    import importlib.util

    loss = ExperimentConfig().loss
    assert (loss.relative, loss.learn_weights, loss.gradient_blending.enabled, loss.weights_lr) == (False, True, False,
                                                                                                     None)
    spec = importlib.util.spec_from_file_location("config_keys", REPO / "bench" / "config_keys.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    keys = mod.training_keys()
    assert len(keys) <= 80, len(keys)
    assert {"loss.relative", "loss.learn_weights", "data.gt_topic", "model.lstm_grid"}.isdisjoint(keys)
    assert {"loss.relative_weight", "loss.weights_lr", "data.gt", "model.fc_dim"} <= keys


# --------------------------------------------------------------------------------------------- engine
def test_few_steps_decrease_loss_and_checkpoints_load(tmp_path: Path) -> None:
    from mfapr_ros.models import load_model

    tr = make_trainer(tmp_path, toy_config(epochs=4))
    summary = tr.fit()
    rows = [r.split(",") for r in (tmp_path / "scalars.csv").read_text().splitlines()[1:]]
    losses = [float(v) for s, e, n, v in rows if n == "train/loss"]
    assert len(losses) >= 6 and np.mean(losses[-2:]) < np.mean(losses[:2])
    sx = [float(v) for s, e, n, v in rows if n == "train/sx"]
    assert sx[-1] != sx[0]  # the learned weighting moves
    assert summary["global_step"] == 4 * 6 and len(summary["history"]) == 4
    for name in ("best", "last"):
        model, ckpt = load_model(tmp_path / name)
        assert ckpt.meta["provenance"]["training_config"]["name"] == "toy"
        assert ckpt.meta["pose_normalization"] == {"t_mean": [5.0, 0.0, 0.0], "t_scale": 4.0}
    kept = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.json") if ".state" not in p.name)
    assert kept == ["step_00000012.json", "step_00000018.json", "step_00000024.json"]  # keep_last = 3
    assert (tmp_path / "config.yaml").exists() and (tmp_path / "summary.json").exists()


def test_resume_after_sigkill_is_bit_identical(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run([sys.executable, __file__, "child", str(tmp_path / "ref"), "0"], env=env, timeout=120,
                         capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = subprocess.run([sys.executable, __file__, "child", str(tmp_path / "run"), "10"], env=env, timeout=120,
                            capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    latest = json.loads((tmp_path / "run" / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 9  # killed after step 10, mid-epoch 1 (6 batches/epoch), last checkpoint at 9
    assert not (tmp_path / "run" / "last.json").exists()
    resumed = subprocess.run([sys.executable, __file__, "child", str(tmp_path / "run"), "resume"], env=env,
                             timeout=120, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = weights_of(tmp_path / "ref" / "last"), weights_of(tmp_path / "run" / "last")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    csv_steps = [int(r.split(",")[0]) for r in (tmp_path / "run" / "scalars.csv").read_text().splitlines()[1:]
                 if ",train/loss," in r]
    assert csv_steps == sorted(set(csv_steps))  # rows after the checkpoint were not duplicated


@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", __file__, "ddp",
           str(tmp_path)]
    r = subprocess.run(cmd, env=env, timeout=180, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    # 24 samples / (2 ranks × batch 4) = 3 steps per epoch, 2 epochs
    assert summary["global_step"] == 6
    assert (tmp_path / "last.json").exists() and not (tmp_path / "rank1").exists()
    w = weights_of(tmp_path / "last")
    assert all(torch.isfinite(v).all() for v in w.values())


def test_gradient_blending_needs_late_fusion(tmp_path: Path) -> None:
    cfg = toy_config()
    cfg.loss.gradient_blending.every_steps = 200
    with pytest.raises(ConfigError, match="late"):
        make_trainer(tmp_path, cfg)


def test_gradient_blending_on_late_fusion_trains(tmp_path: Path) -> None:
    from mfapr_ros.models import build_model, model_meta

    cfg = toy_config(epochs=1)
    cfg.loss.gradient_blending.every_steps = 2
    cfg.loss.gradient_blending.batches = 1
    rig = ring_rig(4)
    model = build_model({"backbone": "posenet_resnet", "arch": "tiny", "width": 4, "fc_dim": 16, "num_fc": 1,
                         "image_size": PX, "num_cameras": 4, "dropout": 0.0,
                         "fusion": {"position": "late", "fc": "fc-1"}})
    pre = PreprocessConfig(resize=PX, crop=PX)
    tr = Trainer(cfg, model, ToyTuples(), ToyTuples(8, steps=1), tmp_path, lambda m, p: model_meta(m, rig, pre, p))
    tr.fit()
    assert tr.blender is not None and len(tr.blender.history) >= 2
    assert sum(tr.blender.weights) == pytest.approx(1.0)
    rows = (tmp_path / "scalars.csv").read_text()
    assert "train/loss_stream3" in rows and "train/gb_w4" in rows


# --------------------------------------------------------------------------------------------- child processes
def _child(out: Path, mode: str) -> None:
    cfg = toy_config(epochs=3, ckpt_every=3)
    tr = make_trainer(out, cfg)
    if mode == "resume":
        tr.fit(resume=True)
        return
    kill_at = int(mode)
    if kill_at:
        orig = tr._boundary

        def boundary(writer, do_val, do_ckpt):
            orig(writer, do_val, do_ckpt)
            if tr.global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

        tr._boundary = boundary  # type: ignore[method-assign]
    tr.fit()


def _ddp(out: Path) -> None:
    from mfapr_training.distributed import init_distributed, shutdown

    info = init_distributed("cpu")
    assert info.world_size == 2
    try:
        make_trainer(out, toy_config(), info).fit()
    finally:
        shutdown()


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "child":
        _child(Path(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "ddp":
        _ddp(Path(sys.argv[2]))


def test_amp_on_cpu_honours_an_explicit_bf16_only_where_it_is_native(caplog, monkeypatch):
    """CPU autocast: ``bf16`` asked for is used where the CPU has native bfloat16; without it, and for ``fp16``,
    training stays fp32 with a warning saying why; ``auto`` and ``off`` are full precision on a CPU. A bf16 step
    really runs the model's matmuls in bfloat16."""
    import torch
    from mfapr_training import optim

    def cfg(mode: str) -> ExperimentConfig:
        c = ExperimentConfig()
        c.train.amp = mode
        return c

    native = optim.cpu_has_native_bf16
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: True)
    assert optim.amp_dtype(cfg("bf16"), "cpu") is torch.bfloat16
    with caplog.at_level("WARNING"):
        assert optim.amp_dtype(cfg("fp16"), "cpu") is None
    assert "train.amp=fp16 ignored on cpu" in caplog.text
    assert optim.amp_dtype(cfg("auto"), "cpu") is None and optim.amp_dtype(cfg("off"), "cpu") is None
    lin = torch.nn.Linear(4, 4)
    with torch.autocast("cpu", dtype=optim.amp_dtype(cfg("bf16"), "cpu")):
        assert lin(torch.ones(2, 4)).dtype is torch.bfloat16
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: False)
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert optim.amp_dtype(cfg("bf16"), "cpu") is None
    assert "no native bfloat16" in caplog.text
    assert isinstance(native(), bool)  # the real probe answers on this machine, whatever its CPU
