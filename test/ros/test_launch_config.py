"""Launch file, params file and RViz config agree with the node: executable, package, parameter and topic names.

launch/launch_ros are not installed here, so the launch file is parsed with ``ast`` (and imported where available).
Also covers the ROS-free parameter validation (``node_params``) since the params file is its user-facing form.
"""

from __future__ import annotations

import ast
import configparser
import re
from pathlib import Path

import pytest
import yaml

from mfapr_ros.core.errors import ConfigError
from mfapr_ros.core.rig import load_rig, ring_rig
from mfapr_ros.ros.params import PARAM_SPECS, bind_cameras, validate_params

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "localize.launch.py"
PARAMS = ROOT / "config" / "localize.yaml"
RVIZ = ROOT / "config" / "mfapr.rviz"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _params_file_values() -> dict:
    doc = yaml.safe_load(PARAMS.read_text())
    return _flatten(doc["/**"]["ros__parameters"])


def _launch_tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text())


def _consts(tree: ast.Module) -> dict[str, str]:
    return {n.targets[0].id: n.value.value for n in tree.body
            if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) and isinstance(n.targets[0], ast.Name)}


def _calls(tree: ast.Module, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


def test_params_file_lists_every_parameter_with_its_default() -> None:
    values = _params_file_values()
    assert set(values) == {s.name for s in PARAM_SPECS}
    for s in PARAM_SPECS:
        expected = s.default if s.kind != "str_list" else []
        assert values[s.name] == expected, s.name
    # every parameter is documented by a comment line right above it (or above its section)
    lines = PARAMS.read_text().splitlines()
    for s in PARAM_SPECS:
        leaf = s.name.split(".")[-1]
        idx = next(i for i, line in enumerate(lines) if re.match(rf"\s*{re.escape(leaf)}:", line))
        assert lines[idx - 1].strip().startswith("#"), f"{s.name} has no comment above it"


def test_params_file_validates_once_checkpoint_is_given() -> None:
    values = _params_file_values()
    with pytest.raises(ConfigError, match="checkpoint"):
        validate_params(values)
    p = validate_params({**values, "checkpoint": "/tmp/x.json"})
    assert p.sync.slop == 0.02 and p.tf_mode == "none" and p.camera_topics == ()


def test_launch_file_matches_node_and_setup() -> None:
    tree = _launch_tree()
    c = _consts(tree)
    assert c["PACKAGE"] == "mfapr_ros" and c["EXECUTABLE"] == "localize_node" and c["PARAMS_FILE"] == "localize.yaml"
    from mfapr_ros.ros.localize_node import NODE_NAME

    assert c["NODE_NAME"] == NODE_NAME
    assert (ROOT / "config" / c["PARAMS_FILE"]).is_file()
    setup = (ROOT / "setup.py").read_text()
    assert "localize_node = mfapr_ros.ros.localize_node:main" in setup
    assert 'glob("launch/*.launch.py")' in setup
    args = {a.args[0].value for a in _calls(tree, "DeclareLaunchArgument")}
    assert args == {"checkpoint", "rig", "params_file", "namespace", "use_sim_time", "device"}
    # every argument is used, and the ones passed as parameters are real node parameters
    used = {a.args[0].value for a in _calls(tree, "LaunchConfiguration")}
    assert used == args
    node_call = _calls(tree, "Node")[0]
    kw = {k.arg: k.value for k in node_call.keywords}
    assert kw["package"].id == "PACKAGE" and kw["executable"].id == "EXECUTABLE"
    param_dict = next(e for e in kw["parameters"].elts if isinstance(e, ast.Dict))
    param_names = {k.value for k in param_dict.keys}
    spec_names = {s.name for s in PARAM_SPECS} | {"use_sim_time"}
    assert param_names <= spec_names and {"checkpoint", "rig", "device", "use_sim_time"} == param_names
    # the params file comes from the package share via ament_index
    assert "get_package_share_directory" in LAUNCH.read_text()


def test_lifecycle_launch_file_matches_the_lifecycle_node() -> None:
    """localize_lifecycle.launch.py: same arguments plus autostart, a launch_ros LifecycleNode running the
    console script that setup.py installs, parameters that the lifecycle node declares."""
    path = ROOT / "launch" / "localize_lifecycle.launch.py"
    tree = ast.parse(path.read_text())
    c = _consts(tree)
    assert c["EXECUTABLE"] == "localize_lifecycle_node" and c["PARAMS_FILE"] == "localize.yaml"
    from mfapr_ros.ros.lifecycle_node import AUTOSTART
    from mfapr_ros.ros.localize_node import NODE_NAME

    assert c["NODE_NAME"] == NODE_NAME and c["PACKAGE"] == "mfapr_ros"
    assert "localize_lifecycle_node = mfapr_ros.ros.lifecycle_node:main" in (ROOT / "setup.py").read_text()
    args = {a.args[0].value for a in _calls(tree, "DeclareLaunchArgument")}
    assert args == {"checkpoint", "rig", "params_file", "namespace", "use_sim_time", "device", AUTOSTART}
    assert {a.args[0].value for a in _calls(tree, "LaunchConfiguration")} == args
    node_call = _calls(tree, "LifecycleNode")[0]
    kw = {k.arg: k.value for k in node_call.keywords}
    assert kw["executable"].id == "EXECUTABLE" and kw["namespace"] is not None  # launch_ros requires a namespace
    param_dict = next(e for e in kw["parameters"].elts if isinstance(e, ast.Dict))
    assert {k.value for k in param_dict.keys} == {"checkpoint", "rig", "device", "use_sim_time", AUTOSTART}


@pytest.mark.parametrize("name", ["localize.launch.py", "localize_lifecycle.launch.py"])
def test_launch_file_imports_where_launch_ros_exists(name: str) -> None:
    pytest.importorskip("launch_ros")  # not in the PyPI wheels: the ast test above is the check here
    import importlib.util

    spec = importlib.util.spec_from_file_location("localize_launch", ROOT / "launch" / name)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    assert mod.generate_launch_description() is not None


def test_rviz_config_topics_match_the_node() -> None:
    from mfapr_ros.ros.localize_node import NODE_NAME

    doc = yaml.safe_load(RVIZ.read_text())
    displays = doc["Visualization Manager"]["Displays"]
    by_class = {}
    for d in displays:
        by_class.setdefault(d["Class"], []).append(d)
    base = f"/{NODE_NAME}"
    assert by_class["rviz_default_plugins/Pose"][0]["Topic"]["Value"] == f"{base}/pose"
    pwc = by_class["rviz_default_plugins/PoseWithCovariance"][0]["Topic"]
    assert pwc["Value"] == f"{base}/pose_with_covariance"
    assert pwc["Durability Policy"] == "Transient Local" and pwc["Reliability Policy"] == "Reliable"
    assert by_class["rviz_default_plugins/Path"][0]["Topic"]["Value"] == f"{base}/path"
    assert "rviz_default_plugins/TF" in by_class
    image_topics = sorted(d["Topic"]["Value"] for d in by_class["rviz_default_plugins/Image"])
    assert image_topics == sorted(c.topic for c in load_rig("ring4").cameras)
    for d in by_class["rviz_default_plugins/Image"]:
        assert d["Topic"]["Reliability Policy"] == "Best Effort"  # matches the cameras' sensor-data QoS
    assert doc["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"


def test_package_xml_declares_what_the_node_imports() -> None:
    text = (ROOT / "package.xml").read_text()
    deps = set(re.findall(r"<(?:exec_)?depend>([^<]+)</", text))
    needed = {"rclpy", "sensor_msgs", "geometry_msgs", "nav_msgs", "diagnostic_msgs", "std_msgs", "std_srvs", "tf2_ros",
              "launch", "launch_ros", "ament_index_python"}
    assert needed <= deps, f"package.xml lacks {sorted(needed - deps)}"


# ---------------------------------------------------------------- parameter validation (ROS-free)
GOOD = {"checkpoint": "/tmp/m.json"}


@pytest.mark.parametrize("key,value,match", [
    ("sync.slop", 0.0, "sync.slop"),
    ("sync.slop", "fast", "sync.slop"),
    ("sync.queue_size", 0, "sync.queue_size"),
    ("sync.min_cameras", -1, "sync.min_cameras"),
    ("sync.stream_timeout", -0.5, "sync.stream_timeout"),
    ("device", "gpu", "device"),
    ("device", "cuda:x", "device"),
    ("precision", "int8", "precision"),
    ("tf_mode", "map_to_world", "tf_mode"),
    ("transform_tolerance", -0.1, "transform_tolerance"),
    ("path_length", -5, "path_length"),
    ("covariance.position_std", 0.0, "covariance.position_std"),
    ("map_frame", "/map", "map_frame"),
    ("map_frame", "", "map_frame"),
    ("default_transport", "theora", "default_transport"),
    ("enforce_image_size", "yes", "enforce_image_size"),
    ("camera_topics", "/a", "camera_topics"),
    ("sync.slopp", 0.1, "sync.slopp"),
    ("uncertainty.lost_timeout", -1.0, "uncertainty.lost_timeout"),
    ("relocalization.watch_bundles", 0, "relocalization.watch_bundles"),
    ("relocalization.watch_mahalanobis", 0.0, "relocalization.watch_mahalanobis"),
    ("relocalization.max_pose_age", 0.0, "relocalization.max_pose_age"),
    ("relocalization.watch_topic", "/amcl_pose", "relocalization.enabled is false"),
])
def test_bad_parameter_is_named(key: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(match)):
        validate_params({**GOOD, key: value})


def test_int_accepted_for_float_and_frames_must_differ() -> None:
    # (a 1 s slop needs a time-jump threshold above it: the synchronizer refuses time_jump <= slop)
    assert validate_params({**GOOD, "sync.slop": 1, "sync.time_jump": 2}).sync.slop == 1.0
    assert validate_params({**GOOD, "device": "cuda:1"}).device == "cuda:1"
    with pytest.raises(ConfigError, match="must differ"):
        validate_params({**GOOD, "tf_mode": "map_to_odom", "odom_frame": "map"})
    p = validate_params({**GOOD, "covariance.position_std": 0.5, "covariance.orientation_std": 0.1})
    assert p.default_covariance() == pytest.approx([0.25, 0.25, 0.25, 0.01, 0.01, 0.01])


def test_bind_cameras_by_name_overrides_and_subset() -> None:
    model_rig = ring_rig(4)
    p = validate_params({**GOOD, "default_transport": "compressed"})
    b = bind_cameras(p, model_rig, None, {"topics.cam2": "/back/image", "transport.cam3": "raw"})
    assert [x.slot for x in b] == [0, 1, 2, 3]
    assert b[0].topic == "/cam0/image_raw/compressed" and b[0].transport == "compressed"
    assert b[2].topic == "/back/image/compressed"
    assert b[3].topic == "/cam3/image_raw" and b[3].transport == "raw"
    # a robot rig with two of the cameras, listed in another order: slots follow the model's order
    robot = model_rig.subset(["cam3", "cam1"])
    b = bind_cameras(validate_params(GOOD), model_rig, robot, {})
    assert [(x.slot, x.name) for x in b] == [(1, "cam1"), (3, "cam3")]
    # list form in the rig's order
    p = validate_params({**GOOD, "camera_topics": ["/a", "/b", "/c", "/d"]})
    assert [x.topic for x in bind_cameras(p, model_rig, None, {"topics.cam1": "/B"})] == ["/a", "/B", "/c", "/d"]


@pytest.mark.parametrize("params,per_cam,match", [
    ({}, {"topics.cam9": "/x"}, "topics.cam9"),
    ({}, {"transport.cam0": "h264"}, "transport.cam0"),
    ({"camera_topics": ["/a", "/b"]}, {}, "camera_topics"),
    ({}, {"topics.cam1": "/cam0/image_raw"}, "distinct"),
    ({"sync.min_cameras": 5}, {}, "sync.min_cameras"),
])
def test_bind_cameras_errors(params: dict, per_cam: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(match)):
        bind_cameras(validate_params({**GOOD, **params}), ring_rig(4), None, per_cam)


def test_robot_rig_with_unknown_camera_is_rejected() -> None:
    with pytest.raises(ConfigError, match="does not know"):
        bind_cameras(validate_params(GOOD), ring_rig(2), ring_rig(4), {})


def test_setup_cfg_installs_scripts_where_ros2_run_finds_them() -> None:
    cfg = ROOT / "setup.cfg"  # `ros2 run mfapr_ros localize_node` / launch look in lib/mfapr_ros
    cp = configparser.ConfigParser()
    cp.read(cfg)
    assert cp.get("install", "install_scripts", fallback="").endswith("lib/mfapr_ros")


def test_relocalization_parameters_become_the_settings() -> None:
    p = validate_params({**GOOD, "relocalization.enabled": True, "relocalization.watch_topic": "/amcl_pose",
                         "relocalization.watch_bundles": 3, "uncertainty.lost_timeout": 2})
    s = p.relocalization
    assert s.enabled and s.watch_enabled and s.watch_bundles == 3 and s.lost_timeout_s == 2.0
    assert p.relocalization_topic == "/initialpose" and s.watch_mahalanobis == 3.4
    assert not validate_params(GOOD).relocalization.enabled  # off by default
    with pytest.raises(ConfigError, match="relocalization.topic"):
        validate_params({**GOOD, "relocalization.enabled": True, "relocalization.topic": ""})
