"""Launch the mfapr_ros localization node: `ros2 launch mfapr_ros localize.launch.py checkpoint:=/path/model.json`.

Arguments: checkpoint (required), rig ('' = the checkpoint's rig), params_file (default: the package's
config/localize.yaml), namespace, use_sim_time (true when replaying a bag with /clock), device (auto|cpu|cuda[:N]).
Arguments given on the command line override the params file; other parameters (tf_mode, sync.*, topics.<camera>)
are set in a copy of config/localize.yaml passed as params_file:=...
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

PACKAGE = "mfapr_ros"
EXECUTABLE = "localize_node"
NODE_NAME = "mfapr_localizer"
PARAMS_FILE = "localize.yaml"


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and the one node; the params file is loaded from the package share via ament_index."""
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", PARAMS_FILE)
    args = [
        DeclareLaunchArgument("checkpoint", description="checkpoint path (NAME.json); required"),
        DeclareLaunchArgument("rig", default_value="", description="rig YAML or shipped name; '' = checkpoint's"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameters YAML"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda | cuda:N"),
    ]
    node = Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
                "rig": ParameterValue(LaunchConfiguration("rig"), value_type=str),
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool),
            },
        ],
    )
    return LaunchDescription([*args, node])
