"""rosbag2 files without ROS (pure-Python `rosbags`): the reader, the one bag → bundles pipeline shared by
`mfapr eval-bag` and the rosbag2 training reader, and a writer of small fully controlled bags for tests."""
