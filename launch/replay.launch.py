"""Replay a rosbag2 through the live localizer and score it: `ros2 bag play` + localize_node + evaluator_node.

    ros2 launch mfapr_ros replay.launch.py bag:=/data/run1 checkpoint:=/models/demo.json out_dir:=out/replay

Needs a full ROS 2 install (launch, launch_ros, rosbag2). Without one (PyPI wheels), run the same three pieces by
hand: `mfapr play BAG --clock`, `localize_node --ros-args -p checkpoint:=... -p use_sim_time:=true`,
`evaluator_node --out DIR`. Arguments: bag (required), checkpoint (required), out_dir, rate, gt_topic, gt_tf
(PARENT:CHILD, instead of gt_topic), params_file (the localizer's; default config/localize.yaml), expected_count
(evaluator stops and writes the report after that many scored poses; 0 = on shutdown). The evaluator's report is
written when it stops; when `ros2 bag play` exits the whole launch is shut down (the evaluator writes on SIGINT).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, EmitEvent, ExecuteProcess, RegisterEventHandler, TimerAction
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

PACKAGE = "mfapr_ros"
LOCALIZER_NAME = "mfapr_localizer"


def generate_launch_description() -> LaunchDescription:
    """Bag player (with /clock), the localizer on sim time, and the evaluator; shut down when the bag ends."""
    default_params = os.path.join(get_package_share_directory(PACKAGE), "config", "localize.yaml")
    args = [
        DeclareLaunchArgument("bag", description="rosbag2 directory to replay"),
        DeclareLaunchArgument("checkpoint", description="checkpoint (NAME.json)"),
        DeclareLaunchArgument("out_dir", default_value="out/replay", description="evaluation report folder"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback rate"),
        DeclareLaunchArgument("gt_topic", default_value="/ground_truth/pose", description="ground-truth topic"),
        DeclareLaunchArgument("gt_tf", default_value="", description="ground truth from TF, PARENT:CHILD"),
        DeclareLaunchArgument("params_file", default_value=default_params, description="localizer parameters"),
        DeclareLaunchArgument("expected_count", default_value="0", description="stop after N scored poses"),
        DeclareLaunchArgument("start_delay", default_value="3.0", description="seconds before playing (startup)"),
    ]
    player = ExecuteProcess(
        cmd=["ros2", "bag", "play", LaunchConfiguration("bag"), "--clock", "--rate", LaunchConfiguration("rate")],
        output="screen",
    )
    localizer = Node(
        package=PACKAGE, executable="localize_node", name=LOCALIZER_NAME, output="screen", emulate_tty=True,
        parameters=[LaunchConfiguration("params_file"), {
            "checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
            "use_sim_time": True,
        }],
    )
    evaluator = Node(
        package=PACKAGE, executable="evaluator_node", name="evaluator_node", output="screen", emulate_tty=True,
        parameters=[{
            "pose_topic": f"/{LOCALIZER_NAME}/pose_with_covariance",  # scored + covariance calibration
            "gt_topic": ParameterValue(LaunchConfiguration("gt_topic"), value_type=str),
            "gt_tf": ParameterValue(LaunchConfiguration("gt_tf"), value_type=str),
            "out_dir": ParameterValue(LaunchConfiguration("out_dir"), value_type=str),
            "checkpoint": ParameterValue(LaunchConfiguration("checkpoint"), value_type=str),
            "expected_count": ParameterValue(LaunchConfiguration("expected_count"), value_type=int),
            "use_sim_time": True,
        }],
    )
    # the bag starts once the localizer has loaded its model and subscribed; when it ends, everything stops
    # (launch sends SIGINT, on which the evaluator writes its report)
    delayed_player = TimerAction(period=LaunchConfiguration("start_delay"), actions=[player])
    stop_at_end = RegisterEventHandler(OnProcessExit(target_action=player, on_exit=[
        TimerAction(period=2.0, actions=[EmitEvent(event=Shutdown(reason="bag finished"))])]))
    return LaunchDescription([*args, localizer, evaluator, delayed_player, stop_at_end])
