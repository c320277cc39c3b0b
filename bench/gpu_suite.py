#!/usr/bin/env python3
"""GPU figures in one command: what the robot runs, measured in minutes, printed as one table and written as JSON.

    .venv/bin/python bench/gpu_suite.py                    # on a CUDA machine: <= 6 min, 224 px, the paper's models
    .venv/bin/python bench/gpu_suite.py --quick            # the same code paths on the CPU at tiny sizes, <= 2 min
    .venv/bin/python bench/gpu_suite.py --quick --tiny     # what test/test_gpu_suite.py runs (< 60 s)
    .venv/bin/python bench/gpu_suite.py --only models,node # a selection (eval_bag needs train: added automatically)

Sections (issue 13), each a list of rows in the JSON and in the table:

* ``models``: batch-1 latency p50/p99 per backbone × fusion (the demo model, TransPoseNet input/tokens, MapNet
  input/tile and late/fc-1, ViT input/tokens) at T = 4 and 10 cameras in fp32/fp16/bf16, eager and
  ``torch.compile``, default layout and channels_last, with peak GPU memory. Times are wall clock around one call
  followed by ``torch.cuda.synchronize()`` (what a caller waits for, launch overhead included). Compiled rows run
  last, inside a compile budget and the suite's deadline, so a slow compiler cannot push the run past 6 minutes;
  rows that do not fit (or do not apply: fp16 on the CPU, bf16 without support) are kept with the reason.
* ``localizer``: :class:`~mfapr_ros.inference.localizer.Localizer` end to end per bundle (JPEG decode + preprocess +
  model + de-normalisation) at T = 4 and 10, JPEG decoded on the device (nvjpeg, ``decode_compressed(device=cuda)``)
  vs on the CPU, fp32 and half precision.
* ``node``: ``localize_node`` over loopback DDS with 10 compressed cameras paced at 30 Hz, through
  ``bench/node.py``'s ``run`` (imported, not copied): sustained poses/s, end-to-end p50/p99, and the share of time
  outside the model (decode + sync + publish per bundle against the inference time), with ``decode_on_device`` off
  and on.
* ``train``: the demo recipe at a larger scale through the CLI (``mfapr synth`` then ``mfapr train --config demo``
  with ``--set`` overrides, so the suite does not depend on trainer internals) with AMP; images/s from the trainer's
  own log, plus a model-only proxy (synthetic batch, same AMP) that shows the data-loading ceiling.
* ``eval_bag``: offline ``evaluate_bag`` on the trained model's query bag on the GPU and on the CPU in the same run
  (bundles/s, × real time, query error).

Targets (issue 13) are pass/fail columns on a GPU and ``n/a (cpu)`` in ``--quick``: the 4-camera input-fused model
<= 5 ms p99 in fp16/bf16 (10 cameras <= 10 ms), node overhead <= 20 % of model time at 10 cameras, offline evaluation
>= 50x real time on the GPU. Exit status 1 when a section failed (its error is in the JSON and under the table).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the suite's own modules
from gpu_common import (
    DTYPES,
    EVAL_SPEEDUP_TARGET,
    GPU_SCALE,
    LATENCY_TARGET_MS,
    MODEL_CASES,
    NA_CPU,
    NODE_OVERHEAD_TARGET,
    QUICK_SCALE,
    ROOT,
    SECTIONS,
    TINY_SCALE,
    Ctx,
    Scale,
    _verdict,
)
from gpu_sections import (
    models_compiled,
    section_eval_bag,
    section_localizer,
    section_models,
    section_node,
    section_train,
)


def targets(ctx: Ctx, doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, judged on the best configuration measured (pass/fail on a GPU, n/a on the CPU)."""
    out: list[dict[str, Any]] = []
    mrows = [r for r in (doc.get("models") or {}).get("rows", []) if "p99_ms" in r]
    for case in (c for c in MODEL_CASES if c.target):
        for T, limit in LATENCY_TARGET_MS.items():
            cand = [r for r in mrows if r["model"] == case.label and r["T"] == T and r["dtype"] in ("fp16", "bf16")]
            best = min(cand, key=lambda r: r["p99_ms"]) if cand else None
            out.append({"target": f"{case.label} T={T} p99 <= {limit:g} ms (fp16/bf16)",
                        "value": best["p99_ms"] if best else None, "limit": limit,
                        "best_mode": (f"{best['dtype']}{' compile' if best['compile'] else ''}"
                                      f"{' channels_last' if best['channels_last'] else ''}") if best else None,
                        "result": _verdict(ctx, best["p99_ms"] <= limit if best else None)})
    nrows = [r for r in (doc.get("node") or {}).get("rows", []) if "overhead_vs_model" in r]
    best = min(nrows, key=lambda r: r["overhead_vs_model"]) if nrows else None
    out.append({"target": f"node overhead (decode+sync+publish) <= {NODE_OVERHEAD_TARGET:.0%} of model time, "
                          f"{ctx.scale.node_cameras} cameras",
                "value": best["overhead_vs_model"] if best else None, "limit": NODE_OVERHEAD_TARGET,
                "best_mode": f"decode_on_device={best['decode_on_device']}" if best else None,
                "result": _verdict(ctx, best["overhead_vs_model"] <= NODE_OVERHEAD_TARGET if best else None)})
    erows = [r for r in (doc.get("eval_bag") or {}).get("rows", []) if r.get("device") == "cuda" and "x_real_time" in r]
    out.append({"target": f"offline eval-bag >= {EVAL_SPEEDUP_TARGET:g}x real time on the GPU",
                "value": erows[0]["x_real_time"] if erows else None, "limit": EVAL_SPEEDUP_TARGET, "best_mode": None,
                "result": _verdict(ctx, erows[0]["x_real_time"] >= EVAL_SPEEDUP_TARGET if erows else None)})
    return out


# ----------------------------------------------------------------------------------------------- table
def _f(v: Any, nd: int = 2) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{nd}f}"
    return str(v)


def table_rows(ctx: Ctx, doc: dict[str, Any]) -> list[list[str]]:
    """One table for every section: section | case | mode | p50 | p99 | rate | peak MiB | note | target | result."""
    out: list[list[str]] = []

    def skip_note(r: dict[str, Any]) -> str:
        return f"skipped: {r['skipped']}" if "skipped" in r else f"FAILED: {r['failed']}" if "failed" in r else ""

    mrows = sorted((doc.get("models") or {}).get("rows", []),
                   key=lambda r: ([c.label for c in MODEL_CASES].index(r["model"]), r["T"], DTYPES.index(r["dtype"]),
                                  r["compile"], r["channels_last"]))
    for r in mrows:
        mode = f"{r['dtype']}{' +compile' if r['compile'] else ''}{' +CL' if r['channels_last'] else ''}"
        tgt, res = "", ""
        case = next(c for c in MODEL_CASES if c.label == r["model"])
        if case.target and r["dtype"] in ("fp16", "bf16") and r["T"] in LATENCY_TARGET_MS:
            tgt = f"p99 <= {LATENCY_TARGET_MS[r['T']]:g} ms"
            res = _verdict(ctx, r["p99_ms"] <= LATENCY_TARGET_MS[r["T"]] if "p99_ms" in r else None)
        note = skip_note(r) or f"{r['params_m']:.2f} M params" + (
            f", compile {r['compile_s']:.1f} s ({r['backend']})" if r.get("compile_s") is not None else "")
        out.append(["models", f"{r['model']} T={r['T']} {r['px']}px", mode, _f(r.get("p50_ms")), _f(r.get("p99_ms")),
                    _f(1e3 / r["p50_ms"], 0) if r.get("p50_ms") else "–", _f(r.get("peak_mib"), 0), note, tgt, res])
    for r in (doc.get("localizer") or {}).get("rows", []):
        note = skip_note(r) or (f"decode {_f(r['decode_p50_ms'])} + infer {_f(r['infer_p50_ms'])} ms"
                                + (", DECODE FELL BACK TO CPU" if r.get("decode_fell_back_to_cpu") else "")
                                + (f", max Δt vs cpu decode {r['t_diff_vs_cpu_decode_m']:.1e} m"
                                   if "t_diff_vs_cpu_decode_m" in r else ""))
        out.append(["localizer", f"{r['preset']} T={r['T']} {r['px']}px jpeg",
                    f"{r['precision']}, decode {r['decode']}", _f(r.get("p50_ms")), _f(r.get("p99_ms")),
                    _f(r.get("bundles_per_s"), 0), _f(r.get("peak_mib"), 0), note, "", ""])
    for r in (doc.get("node") or {}).get("rows", []):
        tgt = f"overhead <= {NODE_OVERHEAD_TARGET:.0%} of model"
        if "skipped" in r:
            out.append(["node", f"{r['cameras']} cams × 30 Hz", f"decode_on_device={r['decode_on_device']}", "–", "–",
                        "–", "–", skip_note(r), tgt, NA_CPU if not ctx.gpu else "n/a"])
            continue
        note = (f"offered {r['offered_hz']:.1f}/s kept {r['kept']:.0%}; max sustained {r['max_sustained_hz']:.1f}/s "
                f"(model alone {r['model_only_hz']:.1f}/s); overhead {r['overhead_ms']:.2f} ms = "
                f"{r['overhead_vs_model']:.0%} of model {r['inference_p50_ms']:.2f} ms; outside model "
                f"{r['outside_model_share_e2e']:.0%} of e2e; device {r['node_device']}")
        out.append(["node", f"{r['cameras']} cams × 30 Hz {r['px']}px jpeg", f"{r['precision']}, decode_on_device="
                    f"{r['decode_on_device']}", _f(r["p50_ms"]), _f(r["p99_ms"]), _f(r["poses_hz"], 1), "–", note,
                    tgt, _verdict(ctx, r["overhead_vs_model"] <= NODE_OVERHEAD_TARGET)])
    for r in (doc.get("train") or {}).get("rows", []):
        if "steps" in r:
            note = (f"{r['steps']} steps batch {r['batch']} in {r['train_wall_s']:.0f} s (synth {r['synth_s']:.0f} s),"
                    f" device {r['train_device']}, val median {_f(r['val_median_t_m'])} m / "
                    f"{_f(r['val_median_r_deg'], 1)}°")
        else:
            note = f"step p50 {r['step_p50_ms']:.1f} ms, {r['batch_bundles']} bundles × 4 cameras"
        out.append(["train", f"{r['case']} {r['px']}px", f"amp {r['amp']}", "–", "–",
                    _f(r["images_per_s"], 0) + " img/s", "–", note, "", ""])
    for r in (doc.get("eval_bag") or {}).get("rows", []):
        tgt = f">= {EVAL_SPEEDUP_TARGET:g}x real time" if r["device"] == "cuda" else ""
        if "skipped" in r:
            out.append(["eval_bag", "query bag", r["device"], "–", "–", "–", "–", skip_note(r), tgt,
                        NA_CPU if tgt else ""])
            continue
        note = (f"{r['x_real_time']:.1f}x real time, {r['bundles']} bundles, inference {r['inference_s']:.2f} of "
                f"{r['wall_s']:.2f} s; query median {_f(r['query_median_t_m'])} m / {_f(r['query_median_r_deg'], 1)}°"
                + (f"; GPU/CPU {r['gpu_vs_cpu']:.1f}x" if "gpu_vs_cpu" in r else ""))
        out.append(["eval_bag", "query bag", f"{r['device']}, batch {r['batch']}", "–", "–",
                    _f(r["bundles_per_s"], 1) + " bundles/s", "–", note, tgt,
                    _verdict(ctx, r["x_real_time"] >= EVAL_SPEEDUP_TARGET) if tgt else ""])
    for t in doc.get("targets", []):
        out.append(["target", t["target"], t["best_mode"] or "", "–", "–", _f(t["value"], 3), "–", "", "",
                    t["result"]])
    return out


def print_table(rows: list[list[str]]) -> None:
    head = ["section", "case", "mode", "p50 ms", "p99 ms", "rate /s", "peak MiB", "note", "target", "result"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


# ----------------------------------------------------------------------------------------------- main
def _finite_json(x: Any, path: str, bad: list[str]) -> Any:
    """JSON-safe copy: NaN/inf become null and their paths are listed (a non-finite figure is a finding)."""
    if isinstance(x, dict):
        return {str(k): _finite_json(v, f"{path}.{k}", bad) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_json(v, f"{path}[{i}]", bad) for i, v in enumerate(x)]
    if isinstance(x, float | np.floating):
        if not math.isfinite(float(x)):
            bad.append(path)
            return None
        return float(x)
    if isinstance(x, np.integer | np.bool_):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    return x


def machine_info(ctx: Ctx) -> dict[str, Any]:
    import torch

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), cpu)
    info = {"host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "device": str(ctx.device), "quick": ctx.quick, "compile_backend": ctx.compile_backend,
            "deploy_preset": ctx.deploy_preset, "deploy_precision": ctx.deploy_precision,
            "ros_domain_id": os.environ.get("ROS_DOMAIN_ID")}
    if ctx.gpu:
        p = torch.cuda.get_device_properties(ctx.device)
        info.update(gpu=torch.cuda.get_device_name(ctx.device), gpu_mem_gib=round(p.total_memory / 2**30, 1),
                    cudnn=torch.backends.cudnn.version(), tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                    tf32_cudnn=torch.backends.cudnn.allow_tf32)
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="Sections: " + ", ".join(SECTIONS) + ". Figures, not assertions; targets are "
                                "judged only on a GPU.")
    p.add_argument("--quick", action="store_true", help="CPU, tiny models and sizes: the same code paths in <= 2 min")
    p.add_argument("--tiny", action="store_true", help="with --quick: the cut the test runs (< 60 s)")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma list of sections (default all)")
    p.add_argument("--json", default=None, help="JSON path (default out/gpu_suite/{gpu,quick}.json)")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cuda:N; --quick forces cpu")
    p.add_argument("--compile-budget", type=float, default=None, help="seconds of torch.compile before compiled "
                   "rows are skipped (default 100 on a GPU, 15 quick)")
    p.add_argument("--compile-backend", default=None, help="torch.compile backend (default inductor on CUDA; "
                   "aot_eager on the CPU, where inductor needs ~1 min of C++ builds per graph on 2 cores)")
    p.add_argument("--iters", type=int, default=None, help="timed calls per model row (default 100 GPU, 10 quick)")
    p.add_argument("--train-steps", type=int, default=None, help="optimizer steps of the training run (default 300 "
                   "GPU, 6 quick)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode: default, reduce-overhead (CUDA "
                   "graphs: what batch-1 latency of small models gains most from), max-autotune-no-cudagraphs")
    p.add_argument("--deploy-preset", default=None, help="model of the localizer/node sections (default "
                   "transposenet at 224 px on a GPU, tiny on the CPU)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default 1 with --quick: on a shared "
                   "box a second intra-op thread stalls on a busy core; torch's default otherwise)")
    p.add_argument("--keep", default=None, help="keep the scratch folder (worlds, runs, logs) here")
    a = p.parse_args(argv)
    if a.tiny and not a.quick:
        p.error("--tiny is a cut of --quick; pass both")
    return a


def _pick_device(args: argparse.Namespace) -> Any:
    """The torch device of the run, or ``None`` (exit 2) when CUDA was asked for but is missing.

    ``--quick`` forces the CPU; without CUDA a full run falls back to ``--quick`` (``args.quick`` is set), since the
    GPU sizes would take far longer than the suite's deadline on a CPU."""
    import torch

    if args.quick:
        device = torch.device("cpu")
    elif args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("gpu_suite: --device cuda but CUDA is not available; use --quick for the CPU run", file=sys.stderr)
            return None
    if device.type != "cuda" and not args.quick:
        print("gpu_suite: no CUDA device: running the --quick (CPU) variant", file=sys.stderr)
        args.quick = True
    return device


def _pick_scale(args: argparse.Namespace) -> Scale:
    """The run's sizes (GPU / quick / tiny) with the command-line overrides applied: a rerun on the device can trade
    one section's time for another's."""
    from dataclasses import replace

    scale = (TINY_SCALE if args.tiny else QUICK_SCALE) if args.quick else GPU_SCALE
    for key, val in (("compile_budget_s", args.compile_budget), ("iters", args.iters),
                     ("train_steps", args.train_steps)):
        if val is not None:
            scale = replace(scale, **{key: val})
    return scale


def _set_threads(args: argparse.Namespace) -> None:
    """Torch CPU threads (1 by default with --quick); the CLI children (synth, train) inherit the same count."""
    import torch

    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def _pick_sections(spec: str) -> list[str] | None:
    """Sections named by ``--only`` (``train`` added for ``eval_bag``, which evaluates the model it trains), or
    ``None`` (exit 2) when a name is unknown."""
    only = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        print(f"gpu_suite: unknown section(s) {unknown}; sections: {', '.join(SECTIONS)}", file=sys.stderr)
        return None
    if "eval_bag" in only and "train" not in only:
        only.append("train")
    return only


def _scratch(stack: contextlib.ExitStack, keep: str | None) -> Path:
    """The scratch folder: ``--keep`` (kept for inspection) or a temporary one removed when ``stack`` closes."""
    if keep:
        tmp = Path(keep).resolve()
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mfapr_gpu_suite_")))


def _run_sections(ctx: Ctx, doc: dict[str, Any], only: list[str]) -> None:
    """Run the selected sections in SECTIONS order, then the compiled model rows (they use whatever time the
    deadline leaves); a failed section is recorded in ``doc["errors"]`` and the others still run."""
    funcs: dict[str, Callable[[Ctx], dict[str, Any]]] = {
        "models": section_models, "localizer": section_localizer, "node": section_node, "train": section_train,
        "eval_bag": section_eval_bag}
    steps: list[tuple[str, Callable[[], None]]] = []
    for name in SECTIONS:
        if name in only:
            steps.append((name, lambda name=name: doc.__setitem__(name, funcs[name](ctx))))
    if "models" in only:
        steps.append(("models_compiled", lambda: models_compiled(ctx, doc["models"])))
    for name, fn in steps:
        if name == "eval_bag" and "train" in doc["errors"]:
            doc["errors"][name] = "not run: the train section failed (it provides the checkpoint and bag)"
            continue
        if name == "models_compiled" and "models" not in doc:
            continue
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a failed section is reported and the others still run
            doc["errors"][name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"
        dt = time.perf_counter() - t0
        doc["meta"]["section_s"][name] = dt
        print(f"  {name}: {dt:.1f} s{' FAILED' if name in doc['errors'] else ''}", flush=True)


def _finish(ctx: Ctx, doc: dict[str, Any], out_json: Path) -> None:
    """Judge the targets, write the JSON (non-finite figures as null, their paths listed) and print the table and
    any section errors."""
    doc["targets"] = targets(ctx, doc)
    doc["meta"]["total_s"] = ctx.elapsed()
    bad: list[str] = []
    clean = _finite_json(doc, "$", bad)
    clean["meta"]["non_finite"] = bad
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(clean, indent=1))
    print()
    print_table(table_rows(ctx, doc))
    print(f"\ntotal {ctx.elapsed():.1f} s; JSON: {out_json}")
    if bad:
        print(f"non-finite figures (null in the JSON): {bad}")
    for name, err in doc["errors"].items():
        print(f"\nsection {name} FAILED: {err}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    t_start = time.perf_counter()
    device = _pick_device(args)
    if device is None:
        return 2
    gpu = device.type == "cuda"
    scale = _pick_scale(args)
    _set_threads(args)
    only = _pick_sections(args.only)
    if only is None:
        return 2
    out_json = Path(args.json or ROOT / "out" / "gpu_suite" / ("quick.json" if args.quick else "gpu.json"))
    with contextlib.ExitStack() as stack:
        ctx = Ctx(device=device, scale=scale, quick=args.quick, tmp=_scratch(stack, args.keep), t_start=t_start,
                  compile_backend=args.compile_backend or ("inductor" if gpu else "aot_eager"),
                  compile_mode=None if args.compile_mode in (None, "default") else args.compile_mode,
                  deploy_preset=args.deploy_preset or ("transposenet" if gpu else "tiny"),
                  deploy_precision="fp16" if gpu else "fp32", half="fp16" if gpu else "bf16")
        doc: dict[str, Any] = {"meta": machine_info(ctx), "errors": {}}
        doc["meta"].update(section_s={}, sections=[s for s in SECTIONS if s in only], scale=vars(scale))
        print(f"# bench/gpu_suite.py — {doc['meta'].get('gpu', 'CPU')} ({device}), torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, {'quick (CPU)' if args.quick else 'full'}{' tiny' if args.tiny else ''}",
              flush=True)
        _run_sections(ctx, doc, only)
        _finish(ctx, doc, out_json)
    return 1 if doc["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
