"""bench/gpu_suite.py at its smallest cut (``--quick --tiny``, CPU): every section runs and reports finite figures.

No GPU is lent to most sessions, so the device run of the suite is prepared blind; this test keeps its code paths
(model zoo × precisions × compile/channels_last, Localizer with JPEG decode, the node over loopback DDS, the demo
recipe through the CLI, eval-bag) alive on the CPU so the one short GPU run does not fail on a typo.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.ros, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("models", "localizer", "node", "train", "eval_bag")


def _numbers(x: Any, path: str = "$") -> list[tuple[str, float]]:
    """Every number in a JSON document with its path (booleans are not figures)."""
    if isinstance(x, dict):
        return [n for k, v in x.items() for n in _numbers(v, f"{path}.{k}")]
    if isinstance(x, list):
        return [n for i, v in enumerate(x) for n in _numbers(v, f"{path}[{i}]")]
    if isinstance(x, int | float) and not isinstance(x, bool):
        return [(path, float(x))]
    return []


def test_quick_tiny_suite_covers_every_section(tmp_path, ros_env):
    out = tmp_path / "suite.json"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_suite.py"), "--quick", "--tiny", "--json",
                           str(out)], env=ros_env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["errors"] == {}
    assert doc["meta"]["non_finite"] == [], doc["meta"]["non_finite"]
    assert doc["meta"]["device"] == "cpu" and doc["meta"]["quick"] is True
    for path, v in _numbers(doc):
        assert math.isfinite(v), path
    for name in SECTIONS:
        rows = doc[name]["rows"]
        measured = [r for r in rows if "skipped" not in r]
        assert measured, f"section {name} measured nothing: {rows}"
        assert not [r for r in rows if "failed" in r], [r for r in rows if "failed" in r]
        assert all(r["skipped"] for r in rows if "skipped" in r), "a skipped row must say why"
    models = doc["models"]["rows"]
    assert {r["model"] for r in models} == {"demo (transposenet input/tokens)", "transposenet input/tokens",
                                            "mapnet input/tile", "mapnet late/fc-1", "vit input/tokens"}
    assert {r["T"] for r in models} == {4, 10}
    assert {(r["dtype"], r["compile"], r["channels_last"]) for r in models} == {
        (d, c, cl) for d in ("fp32", "fp16", "bf16") for c in (False, True) for cl in (False, True)}
    assert any(r["compile"] and "p50_ms" in r for r in models), "the torch.compile path was not exercised"
    for r in models:
        if "p50_ms" in r:
            assert 0 < r["p50_ms"] <= r["p99_ms"]
    assert all("fp16" in r["skipped"] for r in models if r["dtype"] == "fp16"), "fp16 must be skipped on the CPU"
    node = [r for r in doc["node"]["rows"] if "skipped" not in r][0]
    assert node["cameras"] == 10 and node["target_hz"] == 30.0
    assert 20.0 <= node["offered_hz"] <= 31.0, node  # paced at 30 Hz through bench/node.py's run
    assert node["poses_hz"] > 0 and node["latency_n"] > 0 and node["overhead_ms"] > 0
    train = doc["train"]["rows"][0]
    assert train["steps"] >= 1 and train["images_per_s"] > 0 and train["train_device"] == "cpu"
    cpu_eval = [r for r in doc["eval_bag"]["rows"] if r["device"] == "cpu"][0]
    assert cpu_eval["bundles"] > 0 and cpu_eval["bundles_per_s"] > 0
    assert doc["targets"] and all(t["result"] == "n/a (cpu)" for t in doc["targets"])
    assert "| section | case | mode |" in proc.stdout and "n/a (cpu)" in proc.stdout
    assert took < 120, f"the --tiny cut took {took:.0f} s; it is meant to stay under a minute"
