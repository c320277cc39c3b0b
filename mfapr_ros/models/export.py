"""`mfapr export`: a checkpoint → a deployable graph (torch.export ``.pt2``, TorchScript ``.ts`` or ONNX).

The exported graph takes ``(images (B,T,3,S,S) float32, mask (B,T) bool)`` and returns ``(t, q)`` (plus
``log_var`` when the model predicts it) — the same numbers as eager mode: every export is checked against the eager
model on random inputs with a missing camera before it is written (``--no-check`` skips that). Input validation
(shapes, "no camera present") cannot be traced, so callers of an exported graph must drop empty bundles themselves.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mfapr_ros.core.errors import ConfigError, MfaprError
from mfapr_ros.core.io import atomic_write_bytes

log = logging.getLogger(__name__)
FORMATS = ("torch-export", "torchscript", "onnx")
SUFFIX = {"torch-export": ".pt2", "torchscript": ".ts", "onnx": ".onnx"}


class ExportWrapper(nn.Module):
    """Tuple-returning, check-free view of a :class:`PoseRegressor` (exporters want tensors, not dicts)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.keys: tuple[str, ...] = ("t", "q", "log_var") if model.config["predict_variance"] else ("t", "q")

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.forward_unchecked(images, mask)
        return tuple(out[k] for k in self.keys)


def example_inputs(model: nn.Module, batch: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random normalised images and a mask with camera 0 missing in the last row (exercises the mask path)."""
    g = torch.Generator().manual_seed(seed)
    T, S = model.num_cameras, model.image_size
    images = torch.randn(batch, T, 3, S, S, generator=g)
    mask = torch.ones(batch, T, dtype=torch.bool)
    if T > 1:
        mask[-1, 0] = False
    return images, mask


def export_program(model: nn.Module, fmt: str, batch: int = 2, dynamic_batch: bool = True) -> Any:
    """Export ``model`` (eval mode, CPU) to an in-memory program: ExportedProgram / ScriptModule / ONNXProgram."""
    if fmt not in FORMATS:
        raise ConfigError(f"export: --format must be one of {list(FORMATS)}, got {fmt!r}")
    model = model.eval()
    wrapper = ExportWrapper(model).eval()
    args = example_inputs(model, batch)
    if fmt == "torch-export":
        dyn = None
        if dynamic_batch:
            b = torch.export.Dim("batch", min=1, max=1024)
            dyn = {"images": {0: b}, "mask": {0: b}}
        try:
            return torch.export.export(wrapper, args, dynamic_shapes=dyn)
        except Exception as e:
            if not dynamic_batch:
                raise
            log.warning("export: dynamic batch failed (%s); exporting with a fixed batch of %d", e, batch)
            return torch.export.export(wrapper, args)
    if fmt == "torchscript":
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            # shape checks inside nn.MultiheadAttention become constants: fine, the shapes are fixed per model
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit deprecation notice; tracing still works
            return torch.jit.trace(wrapper, args, check_trace=False)
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError("export: --format onnx needs the `onnx` and `onnxscript` packages (pip install onnx "
                          "onnxscript); use --format torch-export or torchscript otherwise") from None
    return torch.onnx.export(wrapper, args, input_names=["images", "mask"], output_names=list(wrapper.keys),
                             dynamo=True)


def run_program(program: Any, fmt: str, images: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Call an exported program the way a deployment would."""
    if fmt == "torch-export":
        return tuple(program.module()(images, mask))
    if fmt == "torchscript":
        return tuple(program(images, mask))
    return tuple(torch.as_tensor(o) for o in program(images, mask))


def verify_export(model: nn.Module, program: Any, fmt: str, batch: int = 2, atol: float = 1e-5,
                  seed: int = 1) -> dict[str, float]:
    """Max |exported − eager| per output on fresh random inputs (another seed than the export example);
    raises :class:`MfaprError` when any exceeds ``atol``."""
    images, mask = example_inputs(model, batch, seed)
    wrapper = ExportWrapper(model.eval())
    with torch.no_grad():
        ref = wrapper(images, mask)
        got = run_program(program, fmt, images, mask)
    diffs = {k: float((a - b).abs().max()) for k, a, b in zip(wrapper.keys, ref, got, strict=True)}
    bad = {k: d for k, d in diffs.items() if not d <= atol}
    if bad:
        raise MfaprError(f"export ({fmt}) does not match eager mode: max abs difference {bad} > {atol}")
    return diffs


def save_program(program: Any, fmt: str, path: Path) -> Path:
    """Write atomically (serialise to a temporary file first, then move via io_utils)."""
    import io

    if fmt == "torch-export":
        buf = io.BytesIO()
        torch.export.save(program, buf)
        atomic_write_bytes(path, buf.getvalue())
    elif fmt == "torchscript":
        buf = io.BytesIO()
        torch.jit.save(program, buf)
        atomic_write_bytes(path, buf.getvalue())
    else:
        tmp = path.with_name(path.name + ".tmp.onnx")
        program.save(str(tmp))
        atomic_write_bytes(path, tmp.read_bytes())
        tmp.unlink()
    return path


def main(argv: list[str] | None = None) -> int:
    """`mfapr export --checkpoint CKPT --out FILE [--format torch-export|torchscript|onnx]`."""
    from .registry import load_model

    p = argparse.ArgumentParser(prog="mfapr export", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint NAME / NAME.json / NAME.safetensors")
    p.add_argument("--out", required=True, help=f"output file (suffix added if missing: {SUFFIX})")
    p.add_argument("--format", default="torch-export", choices=FORMATS)
    p.add_argument("--batch", type=int, default=2, help="example batch size used for tracing (default 2)")
    p.add_argument("--static-batch", action="store_true", help="torch-export: fix the batch size (default dynamic)")
    p.add_argument("--no-check", action="store_true", help="skip the numerical check against eager mode")
    p.add_argument("--atol", type=float, default=1e-5, help="tolerance of the eager-vs-export check")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model, ckpt = load_model(a.checkpoint, device="cpu")
    out = Path(a.out)
    if out.suffix != SUFFIX[a.format]:
        out = out.with_name(out.name + SUFFIX[a.format])
    t0 = time.perf_counter()
    program = export_program(model, a.format, a.batch, dynamic_batch=not a.static_batch)
    if not a.no_check:
        diffs = verify_export(model, program, a.format, a.batch, a.atol)
        print(f"export check vs eager: max abs diff {diffs}")
    save_program(program, a.format, out)
    print(f"exported {ckpt.path} ({model.config['backbone']}, fusion {model.config['fusion']}) → {out} "
          f"[{a.format}] in {time.perf_counter() - t0:.1f} s; inputs images (B,{model.num_cameras},3,"
          f"{model.image_size},{model.image_size}) float32 normalised, mask (B,{model.num_cameras}) bool; "
          f"outputs {ExportWrapper(model).keys}")
    return 0
