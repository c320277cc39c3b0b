"""The layering rules of docs/architecture.md, checked on every module rather than a hand-picked few.

Why: the node, the bag evaluator and training share one core only as long as the core runs without ROS. A single
stray ``import rclpy`` (or a message package) outside ``mfapr_ros/ros/`` would make `mfapr eval-bag` and training
need a ROS install, and nothing else would notice until a user without one tried.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mfapr_ros"
TRAINING = Path(__file__).resolve().parents[2] / "training"

#: top-level names that mean "needs a ROS 2 install or its message wheels"
ROS_MODULES = {
    "rclpy", "rosidl_runtime_py", "message_filters", "cv_bridge", "launch", "launch_ros", "tf2_ros", "tf2_msgs",
    "diagnostic_updater", "ament_index_python", "builtin_interfaces", "rosgraph_msgs", "rcl_interfaces",
    "lifecycle_msgs", "sensor_msgs", "geometry_msgs", "nav_msgs", "std_msgs", "visualization_msgs",
    "diagnostic_msgs", "std_srvs",
}
#: imports allowed outside ros/ because they are guarded and optional: the shipped-config lookup of a colcon install
GUARDED = {("core/rig.py", "ament_index_python")}


def imported_modules(path: Path) -> set[str]:
    """Every absolute module a file imports, anywhere in it (lazy imports inside functions count too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def _modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_walk_finds_every_package() -> None:
    found = {p.relative_to(PACKAGE).parts[0] for p in _modules(PACKAGE) if len(p.relative_to(PACKAGE).parts) > 1}
    assert {"core", "bag", "models", "inference", "evaluation", "ros"} <= found


@pytest.mark.parametrize("path", _modules(PACKAGE) + _modules(TRAINING),
                         ids=lambda p: p.relative_to(PACKAGE.parent).as_posix())
def test_only_ros_package_imports_ros(path: Path) -> None:
    try:
        rel = path.relative_to(PACKAGE).as_posix()
    except ValueError:
        rel = "training/" + path.relative_to(TRAINING).as_posix()
    if rel.startswith("ros/"):
        return
    bad = {m for m in imported_modules(path) if m.split(".")[0] in ROS_MODULES}
    bad = {m for m in bad if (rel, m.split(".")[0]) not in GUARDED}
    assert not bad, f"{rel} imports {sorted(bad)}: only mfapr_ros/ros/ may import ROS (docs/architecture.md)"


@pytest.mark.parametrize("path", _modules(PACKAGE), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_layers_point_down(path: Path) -> None:
    """core imports nothing above it (bag, evaluation, ros; models and inference: test/test_imports.py); only ros/
    imports ros/ (env is ROS-free and shared)."""
    rel = path.relative_to(PACKAGE).as_posix()
    mods = {m for m in imported_modules(path) if m.startswith(("mfapr_ros", "mfapr_training"))}
    assert not {m for m in mods if m.startswith("mfapr_training")}, f"{rel}: mfapr_ros must not import training"
    if rel.startswith("core/"):
        above = {m for m in mods if m.startswith(("mfapr_ros.ros", "mfapr_ros.evaluation", "mfapr_ros.bag"))}
        assert not above, f"{rel} (core) imports {sorted(above)}"
    if not rel.startswith("ros/"):
        assert not {m for m in mods if m.startswith("mfapr_ros.ros.") and m != "mfapr_ros.ros.env"}, \
            f"{rel} imports the ROS side"


def test_every_core_module_imports_without_ros() -> None:
    """Import all of core/, bag/, evaluation/, models/ and inference/ in a process where rclpy and the messages are
    blocked."""
    names = [".".join(("mfapr_ros", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(".__init__")
             for p in _modules(PACKAGE)
             if p.relative_to(PACKAGE).parts[0] in {"core", "bag", "evaluation", "models", "inference"}]
    code = ("import sys, importlib\n"
            f"for m in {sorted(ROS_MODULES)!r}: sys.modules[m] = None\n"
            f"for n in {names!r}: importlib.import_module(n)\n"
            "print(len(sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(names) > 30
