"""The model as a TorchScript graph for batch-1 CPU inference: the forward pass runs in C++ without the GIL.

Why (issue 25): the demo model's eager forward at 64 px is dominated by Python-side op dispatch, all of it under the
GIL. The node's other threads (camera intake, decode, publish) then cannot use the second core while the model
runs, and two threads each running the eager model add up to one core. A traced graph is executed by the
TorchScript interpreter, which releases the GIL for the whole call: measured on the 10-camera demo model (CPU ms per
forward, one thread) eager 2.55, traced 1.95, frozen 1.81, frozen + ``optimize_for_inference`` 1.52; two threads
get 1.7-2.1x one thread's throughput (eager: 1.0x).

What is traced is the module call itself (:meth:`PoseRegressor.forward_unchecked`, or the module's ``__call__``
for a model without it): no structure is hard-coded, so whatever the fusion mode and head compute is what the graph
computes. Data-dependent input validation (``check_inputs``: shapes, "no camera present") stays outside the graph;
the caller runs it before every call.

Three graphs are tried, fastest first, and the first that reproduces the eager model on seeded inputs (every
camera, camera 0 missing, only the last camera: a forward that branches on the mask in Python fails here) is kept:
``t`` (metres) and ``q`` within :data:`ATOL`, every other output read within :data:`ATOL` + :data:`RTOL` relative.

* frozen + ``torch.jit.optimize_for_inference`` (batch norm folded into the convolutions, oneDNN kernels);
* frozen (batch norm folded);
* traced only: the same aten kernels in the same order as eager mode, bit-identical to it in every case measured.

The first two round differently from eager mode (folding changes float32 products): a few float32 ulps of the
normalised output, times ``t_scale`` in metres. Measured: 1.6e-6 m on a trained demo-world model (t_scale 13.6 m), on
camera images as on the seeded inputs; a model whose own rounding is larger (an untrained rig-symmetric head
averages nearly cancelling 6-D forms: q moves by 8e-5) fails the check and gets the traced graph. The check runs
on seeded inputs, not on every camera image; ``torchscript:=false`` runs the eager model itself. Whatever cannot be
built or verified leaves the model eager, with the reason returned for the caller to log; ``torch.jit`` is
deprecated in torch 2.x but still shipped — if it goes, tracing raises and the model runs eagerly.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

#: absolute tolerance of the graph against eager mode (t in metres, q unitless, the others in their own units)
ATOL = 1e-5
#: relative part of the tolerance for outputs other than t and q (log-variances, anchor logits: larger magnitudes)
RTOL = 1e-5
#: outputs compared with the absolute tolerance alone (what the node publishes)
ABSOLUTE_KEYS = ("t", "q")



class _Unchecked(nn.Module):
    """The module call without input validation, returning its tensor outputs (what tracing can represent) —
    only those named in ``keys`` when given, so the frozen graph drops what nobody reads."""

    def __init__(self, model: nn.Module, keys: Sequence[str] | None = None) -> None:
        super().__init__()
        self.model = model
        fwd = getattr(model, "forward_unchecked", None)
        self._call: Callable[..., Any] = fwd if callable(fwd) else model
        self._keys = None if keys is None else frozenset(keys)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self._call(images, mask)
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor) and (self._keys is None or k in self._keys)}


@dataclass
class CompiledModel:
    """A verified graph of one model for one input shape; ``max_error`` is the largest |graph − eager| per output
    over the verification inputs, ``kind`` says which graph passed."""

    graph: Any
    kind: str
    images_shape: tuple[int, ...]
    device: torch.device
    max_error: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def accepts(self, images: torch.Tensor, mask: torch.Tensor) -> bool:
        """Whether this graph was built for these inputs (same shape, float32, device); otherwise run eagerly."""
        return (tuple(images.shape) == self.images_shape and images.dtype == torch.float32
                and images.device == self.device and tuple(mask.shape) == self.images_shape[:2])

    def __call__(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the graph (the GIL is released inside); inputs must be validated (``check_inputs``) already."""
        return self.graph(images, mask)


def verification_inputs(num_cameras: int, size: int, device: torch.device,
                        seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Seeded normalised batch-1 images with three masks: all cameras, camera 0 missing, only the last camera."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(1, num_cameras, 3, size, size, generator=g).to(device)
    masks = [torch.ones(1, num_cameras, dtype=torch.bool)]
    if num_cameras > 1:
        one_missing = masks[0].clone()
        one_missing[0, 0] = False
        only_last = torch.zeros(1, num_cameras, dtype=torch.bool)
        only_last[0, -1] = True
        masks += [one_missing, only_last]
    return [(images, m.to(device)) for m in masks]


def _tensors(out: dict[str, Any], keys: Sequence[str] | None) -> dict[str, torch.Tensor]:
    return {k: v.detach().double().cpu() for k, v in out.items()
            if isinstance(v, torch.Tensor) and (keys is None or k in keys)}


def output_errors(ref: dict[str, Any], got: dict[str, torch.Tensor],
                  keys: Sequence[str] | None = None) -> tuple[dict[str, float], list[str]]:
    """Max |got − ref| per tensor output of ``ref`` (those in ``keys`` when given) and the outputs outside the
    tolerance (a missing or misshaped one included)."""
    errors: dict[str, float] = {}
    bad: list[str] = []
    for k, r64 in _tensors(ref, keys).items():
        g = got.get(k)
        if g is None or g.shape != r64.shape:
            bad.append(f"{k} (missing or shape {None if g is None else tuple(g.shape)} != {tuple(r64.shape)})")
            continue
        diff = (g.detach().double().cpu() - r64).abs()
        errors[k] = float(diff.max()) if diff.numel() else 0.0
        limit = ATOL if k in ABSOLUTE_KEYS else ATOL + RTOL * r64.abs()
        if not bool(torch.all(diff <= limit)):  # NaN compares False: a NaN in either is a mismatch
            bad.append(f"{k} (max |Δ| {errors[k]:.3g})")
    return errors, bad


#: the graphs tried, fastest first (module docstring): name → (freeze, optimize_for_inference)
VARIANTS = {"optimized": (True, True), "frozen": (True, False), "traced": (False, False)}


def _build(model: nn.Module, example: tuple[torch.Tensor, torch.Tensor], variant: str,
           keys: Sequence[str] | None) -> Any:
    freeze, optimize = VARIANTS[variant]
    with torch.no_grad(), warnings.catch_warnings():
        # TracerWarning: shape checks inside the model become constants (the graph is used for this shape only);
        # FutureWarning: the torch.jit deprecation notice (it still works; a removal makes this raise → eager)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        graph = torch.jit.trace(_Unchecked(model, keys).eval(), example, strict=False, check_trace=False)
        if freeze:
            graph = torch.jit.freeze(graph.eval())
        return torch.jit.optimize_for_inference(graph) if optimize else graph


def compile_model(model: nn.Module, num_cameras: int, size: int, device: torch.device,
                  keys: Sequence[str] | None = None,
                  variants: Sequence[str] = tuple(VARIANTS)) -> tuple[CompiledModel | None, str]:
    """Trace ``model`` for batch-1 inputs ``(1, num_cameras, 3, size, size)``; keep the first of ``variants`` that
    matches eager mode (module docstring). ``keys``: the outputs the caller reads (the graph returns and is checked
    on only those; an intermediate such as a symmetric head's raw 6-D average may round differently without
    changing them); ``None`` = every tensor output. Returns ``(CompiledModel, "")`` or ``(None, why)`` — the
    caller logs and stays eager."""
    checks = verification_inputs(num_cameras, size, device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        refs = [model(x, m) for x, m in checks]
    failures: list[str] = []
    for variant in variants:
        try:
            graph = _build(model, checks[1] if len(checks) > 1 else checks[0], variant, keys)  # the mask path
            errors: dict[str, float] = {}
            with torch.inference_mode():
                for _ in range(2):  # the profiling executor specialises the graph on its first calls: check after
                    graph(*checks[0])
                for (x, m), ref in zip(checks, refs, strict=True):
                    err, bad = output_errors(ref, graph(x, m), keys)
                    if bad:
                        raise ValueError(f"differs from eager mode: {', '.join(bad)}")
                    errors = {k: max(v, errors.get(k, 0.0)) for k, v in err.items()}
        except Exception as e:  # noqa: BLE001 - any failure (untraceable op, mismatch, no torch.jit) → next / eager
            failures.append(f"{variant}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        return CompiledModel(graph, variant, tuple(checks[0][0].shape), device, errors, time.perf_counter() - t0), ""
    return None, "; ".join(failures)
