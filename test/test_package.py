"""colcon/ament readiness and the `mfapr` command: package.xml parses with its dependencies, setup.py installs the
launch/config/resource files under share/mfapr_ros, console scripts exist."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_package_xml_parses_with_dependencies():
    catkin_pkg = pytest.importorskip("catkin_pkg.package")
    pkg = catkin_pkg.parse_package(str(ROOT / "package.xml"))
    assert pkg.name == "mfapr_ros" and pkg.package_format == 3
    exec_deps = {d.name for d in pkg.exec_depends}
    for dep in ("rclpy", "sensor_msgs", "geometry_msgs", "nav_msgs", "std_msgs", "diagnostic_msgs", "tf2_ros",
                "python3-numpy", "python3-transforms3d", "python3-torch"):
        assert dep in exec_deps, dep
    assert pkg.get_build_type() == "ament_python"
    assert {d.name for d in pkg.test_depends} >= {"python3-pytest", "ament_flake8"}


def test_setup_installs_share_files(tmp_path):
    """Run the same install step colcon runs (setup.py install into a prefix) and look at share/."""
    prefix = tmp_path / "install"
    subprocess.run([sys.executable, "setup.py", "-q", "build", "--build-base", str(tmp_path / "build"),
                    "egg_info", "--egg-base", str(tmp_path), "install", "--prefix", str(prefix),
                    "--single-version-externally-managed", "--record", str(tmp_path / "rec.txt")],
                   cwd=ROOT, check=True, capture_output=True)
    share = prefix / "share" / "mfapr_ros"
    assert (prefix / "share/ament_index/resource_index/packages/mfapr_ros").exists()
    assert (share / "package.xml").exists()
    assert (share / "config/rigs/ring4.yaml").exists()
    for launch in (ROOT / "launch").glob("*.launch.py"):
        assert (share / "launch" / launch.name).exists()
    scripts = prefix / "lib" / "mfapr_ros"
    assert {"localize_node", "evaluator_node", "mfapr"} <= {p.name for p in scripts.iterdir()}
    site = next(prefix.glob("lib/python*/site-packages"))
    assert (site / "mfapr_ros" / "core" / "geometry.py").exists()
    assert (site / "mfapr_training" / "__init__.py").exists()
    assert not (site / "training").exists(), "training/ must install as mfapr_training, not a bare 'training'"


def test_cli_version_and_help():
    out = subprocess.run([sys.executable, "-m", "mfapr_ros.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("mfapr_ros ")
    out = subprocess.run([sys.executable, "-m", "mfapr_ros.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "eval-bag" in out.stdout and "train" in out.stdout
    out = subprocess.run([sys.executable, "-m", "mfapr_ros.cli", "nope"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown command" in out.stderr


def test_core_modules_import_without_rclpy():
    """The ROS-free core must not pull rclpy in (node-side modules only)."""
    code = ("import sys; import mfapr_ros.core.geometry, mfapr_ros.core.rig, mfapr_ros.core.checkpoint, "
            "mfapr_ros.core.preprocess; "
            "assert 'rclpy' not in sys.modules, 'rclpy imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
