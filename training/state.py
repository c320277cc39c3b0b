"""The trainer state that a resume restores, without pickle: global RNG states and the optimizer state split into
tensors (safetensors) and JSON."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


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
