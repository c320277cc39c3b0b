"""ament_python package setup: works with `colcon build` in a ROS 2 workspace and `pip install -e .` outside one.

Two Python packages ship from this repository: `mfapr_ros` (runtime, shared by node, evaluation and training) and
`mfapr_training` (offline training, sources in training/), which depends on mfapr_ros and never the reverse.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "mfapr_ros"


def _tree(folder: str) -> list[tuple[str, list[str]]]:
    """data_files entries that mirror `folder` under share/mfapr_ros, keeping sub-folders (config/rigs …)."""
    import os

    out = []
    for root, _dirs, files in os.walk(folder):
        paths = [os.path.join(root, f) for f in files if not f.startswith(".")]
        if paths:
            out.append((os.path.join("share", PACKAGE, root), paths))
    return out


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"])
    + ["mfapr_training"] + [f"mfapr_training.{p}" for p in find_packages("training")],
    package_dir={"mfapr_training": "training"},
    package_data={"mfapr_training": ["configs/*.yaml", "configs/**/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        *_tree("config"),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="mfapr_ros maintainers",
    maintainer_email="mfapr@example.com",
    description="Multi-camera absolute pose regression for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "localize_node = mfapr_ros.ros.localize_node:main",
            "localize_lifecycle_node = mfapr_ros.ros.lifecycle_node:main",
            "evaluator_node = mfapr_ros.ros.evaluator_node:main",
            "mfapr = mfapr_ros.cli:main",
        ],
    },
)
