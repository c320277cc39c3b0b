"""Checkpoints: safetensors weights + a JSON document; never pickle.

A checkpoint named ``NAME`` is two files side by side: ``NAME.safetensors`` (tensors only) and ``NAME.json``::

    {"format": "mfapr_ros.core.checkpoint", "format_version": 1,
     "tensors": {"file": "NAME.safetensors", "sha256": "...", "num_tensors": 123},
     "model": {... build_model config ...},          # rebuilds the network from the JSON alone
     "rig": {... Rig.to_dict() ...},                 # camera order = model input slots
     "preprocess": {... PreprocessConfig.to_dict() ...},
     "pose_normalization": {"t_mean": [...], "t_scale": s},
     "provenance": {...}}                            # training config, dataset, git, step, metrics

Writes are atomic (weights first, then the JSON that references them by hash), so a checkpoint whose JSON exists
is complete; a hash mismatch (weights replaced or truncated) is reported instead of loading wrong weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError
from .io import atomic_write_bytes, atomic_write_json

FORMAT = "mfapr_ros.core.checkpoint"
FORMAT_VERSION = 1
#: the documented one-liner that records a missing weights hash (what the missing-sha256 error tells the user to run)
ADD_SHA256_COMMAND = "python -m mfapr_ros.core.checkpoint add-sha256"
REQUIRED_KEYS = ("model", "rig", "preprocess")


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """``(json_path, tensors_path)`` for a checkpoint given as ``NAME``, ``NAME.json`` or ``NAME.safetensors``."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".safetensors")


@dataclass
class Checkpoint:
    """A loaded checkpoint: the JSON document and the tensors (on CPU unless asked otherwise)."""

    meta: dict[str, Any]
    state_dict: dict[str, Any]
    path: Path

    @property
    def model_config(self) -> dict[str, Any]:
        return self.meta["model"]

    @property
    def rig(self) -> Any:
        from .rig import Rig

        return Rig.from_dict(self.meta["rig"], source=f"{self.path} (rig)")

    @property
    def preprocess(self) -> dict[str, Any]:
        return self.meta["preprocess"]


def save_checkpoint(path: str | Path, weights: Any, meta: dict[str, Any]) -> Path:
    """Save ``weights`` (an ``nn.Module`` or a state dict of tensors) and ``meta``; returns the JSON path.

    ``meta`` must hold ``model``, ``rig`` and ``preprocess``; everything in it must be JSON-serialisable.
    """
    import torch
    from safetensors.torch import save

    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint meta lacks {missing}; it needs {list(REQUIRED_KEYS)}")
    state = weights.state_dict() if hasattr(weights, "state_dict") else dict(weights)
    tensors: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            raise CheckpointError(f"state entry '{k}' is a {type(v).__name__}, not a tensor; put it in meta instead")
        tensors[k] = v.detach().to("cpu").contiguous()
    # Tied weights share storage; safetensors refuses those, so store independent copies.
    seen: dict[int, str] = {}
    for k, v in list(tensors.items()):
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        if ptr in seen and ptr != -1:
            tensors[k] = v.clone()
        seen.setdefault(ptr, k)
    blob = save(tensors, metadata={"format": FORMAT})
    json_path, st_path = checkpoint_paths(path)
    atomic_write_bytes(st_path, blob)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tensors": {"file": st_path.name, "sha256": hashlib.sha256(blob).hexdigest(), "num_tensors": len(tensors)},
        **{k: v for k, v in meta.items() if k not in ("format", "format_version", "tensors")},
    }
    try:
        json.dumps(doc)
    except TypeError as e:
        raise CheckpointError(f"checkpoint meta is not JSON-serialisable: {e}") from None
    atomic_write_json(json_path, doc)
    return json_path


def read_checkpoint_meta(path: str | Path) -> dict[str, Any]:
    """The validated JSON document only (cheap: the node uses it to pick the rig before loading weights)."""
    json_path, _ = checkpoint_paths(path)
    if not json_path.exists():
        raise CheckpointError(f"checkpoint not found: {json_path} (a checkpoint is NAME.json + NAME.safetensors)")
    try:
        doc = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{json_path}: not valid JSON ({e}); the file is corrupt") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: not an mfapr_ros checkpoint (format is {doc.get('format')!r})"
                              if isinstance(doc, dict) else f"{json_path}: not an mfapr_ros checkpoint")
    if doc.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{json_path}: format_version {doc.get('format_version')} is not supported "
                              f"(this mfapr_ros reads {FORMAT_VERSION})")
    missing = [k for k in (*REQUIRED_KEYS, "tensors") if k not in doc]
    if missing:
        raise CheckpointError(f"{json_path}: missing keys {missing}")
    return doc


def update_checkpoint_meta(path: str | Path, updates: dict[str, Any]) -> Path:
    """Set top-level meta keys (e.g. ``covariance_calibration``) of an existing checkpoint; returns the JSON path.

    Only the JSON is rewritten (atomically: a reader sees the old or the new document, never half of one); the
    weights file and its hash stay untouched, so the checkpoint stays verifiable. The format keys and the required
    keys cannot be replaced this way (that would be a different checkpoint: use :func:`save_checkpoint`).
    """
    json_path, _ = checkpoint_paths(path)
    doc = read_checkpoint_meta(json_path)
    protected = sorted(set(updates) & {"format", "format_version", "tensors", *REQUIRED_KEYS})
    if protected:
        raise CheckpointError(f"update_checkpoint_meta: {protected} cannot be changed in place; save a new "
                              "checkpoint instead")
    doc.update(updates)
    try:
        json.dumps(doc)
    except TypeError as e:
        raise CheckpointError(f"checkpoint meta update is not JSON-serialisable: {e}") from None
    atomic_write_json(json_path, doc)
    return json_path


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> Checkpoint:
    """Load and verify a checkpoint. Never unpickles: safetensors holds tensors only."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    json_path, st_path = checkpoint_paths(path)
    doc = read_checkpoint_meta(json_path)
    if not isinstance(doc["tensors"], dict):
        raise CheckpointError(f"{json_path}: 'tensors' must be a mapping with file and sha256, got {doc['tensors']!r}")
    st_path = json_path.with_name(doc["tensors"].get("file", st_path.name))
    if not st_path.exists():
        raise CheckpointError(f"{json_path}: weights file {st_path} is missing")
    recorded = doc["tensors"].get("sha256")
    if not isinstance(recorded, str) or not recorded:
        raise CheckpointError(f"{json_path}: tensors.sha256 is missing, so the weights in {st_path.name} cannot be "
                              f"verified; if they are the intended ones, record their hash with "
                              f"`{ADD_SHA256_COMMAND} {json_path}`")
    blob = st_path.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != recorded:
        raise CheckpointError(f"{st_path}: sha256 {digest[:12]}… does not match {json_path} "
                              f"({str(doc['tensors'].get('sha256'))[:12]}…): weights were truncated or replaced")
    try:
        state = load(blob)
    except (SafetensorError, Exception) as e:  # noqa: BLE001 - safetensors raises several types on corruption
        raise CheckpointError(f"{st_path}: cannot read safetensors ({e})") from None
    if map_location != "cpu":
        state = {k: v.to(map_location) for k, v in state.items()}
    return Checkpoint(doc, state, json_path)


def add_sha256(path: str | Path) -> str:
    """Record the sha256 of the weights in a checkpoint JSON that lacks one (e.g. written by hand or by an old
    exporter); returns the hash. A JSON that already has a hash is left alone: re-hashing would hide weights that
    were truncated or replaced, which is exactly what the hash is there to catch."""
    json_path, st_default = checkpoint_paths(path)
    doc = read_checkpoint_meta(json_path)
    tensors = doc["tensors"] if isinstance(doc["tensors"], dict) else {}
    if tensors.get("sha256"):
        raise CheckpointError(f"{json_path}: tensors.sha256 is already recorded ({str(tensors['sha256'])[:12]}…); "
                              "it is not replaced (a mismatch means the weights changed: re-save the checkpoint)")
    st_path = json_path.with_name(tensors.get("file", st_default.name))
    if not st_path.exists():
        raise CheckpointError(f"{json_path}: weights file {st_path} is missing")
    blob = st_path.read_bytes()
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        n = len(load(blob))
    except (SafetensorError, Exception) as e:  # noqa: BLE001 - safetensors raises several types on corruption
        raise CheckpointError(f"{st_path}: cannot read safetensors ({e}); no hash recorded") from None
    digest = hashlib.sha256(blob).hexdigest()
    doc["tensors"] = {**tensors, "file": st_path.name, "sha256": digest, "num_tensors": n}
    atomic_write_json(json_path, doc)
    return digest


def main(argv: list[str] | None = None) -> int:
    """``python -m mfapr_ros.core.checkpoint add-sha256 NAME.json``: the one-liner of the missing-sha256 error."""
    import argparse
    import sys

    from .errors import MfaprError

    ap = argparse.ArgumentParser(prog="python -m mfapr_ros.core.checkpoint",
                                 description="checkpoint maintenance")
    sub = ap.add_subparsers(dest="cmd", required=True)
    add = sub.add_parser("add-sha256", help="record the sha256 of the weights in a JSON that lacks one")
    add.add_argument("checkpoint", help="NAME, NAME.json or NAME.safetensors")
    args = ap.parse_args(argv)
    try:
        digest = add_sha256(args.checkpoint)
    except MfaprError as e:
        print(f"add-sha256: error: {e}", file=sys.stderr)
        return 2
    print(f"{checkpoint_paths(args.checkpoint)[0]}: tensors.sha256 = {digest}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
