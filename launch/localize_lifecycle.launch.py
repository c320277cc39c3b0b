"""Launch the managed (lifecycle) localizer: `ros2 launch mfapr_ros localize_lifecycle.launch.py checkpoint:=...`.

The node starts *unconfigured*; a lifecycle manager brings it up, e.g. add ``mfapr_localizer`` to the
``node_names`` of nav2_lifecycle_manager, or by hand::

    ros2 lifecycle set /mfapr_localizer configure   # validate parameters, load + warm up the checkpoint
    ros2 lifecycle set /mfapr_localizer activate    # subscribe to the cameras, publish poses

``autostart:=true`` makes the node configure and activate itself (no manager). Other arguments as in
localize.launch.py; the node reads the same config/localize.yaml.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

PACKAGE = "mfapr_ros"
EXECUTABLE = "localize_lifecycle_node"
NODE_NAME = "mfapr_localizer"
PARAMS_FILE = "localize.yaml"


def generate_launch_description() -> LaunchDescription:
    """Declare the arguments and the one lifecycle node; the params file comes from the package share."""
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", PARAMS_FILE)
    args = [
        DeclareLaunchArgument("checkpoint", description="checkpoint path (NAME.json); required"),
        DeclareLaunchArgument("rig", default_value="", description="rig YAML or shipped name; '' = checkpoint's"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="node parameters YAML"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda | cuda:N"),
        DeclareLaunchArgument("autostart", default_value="false",
                              description="configure + activate at startup (no lifecycle manager)"),
    ]
    node = LifecycleNode(
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
                "autostart": ParameterValue(LaunchConfiguration("autostart"), value_type=bool),
            },
        ],
    )
    return LaunchDescription([*args, node])
