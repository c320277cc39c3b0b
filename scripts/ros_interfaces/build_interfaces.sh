#!/usr/bin/env bash
# Build ROS 2 interface packages that are not on PyPI (today: tf2_msgs) from the
# verbatim upstream definitions in this folder, with the rosidl generators that
# the PyPI "ros-*" wheels put into the venv, and install them INTO the venv:
#   <venv>/lib/python3.X/site-packages/tf2_msgs/   (Python classes + C typesupport modules)
#   <venv>/lib/libtf2_msgs__*.so                    (rosidl C/C++ libraries)
#   <venv>/share/tf2_msgs, <venv>/include/tf2_msgs  (ament index, cmake config, idl)
# exactly where the PyPI wheels put their own message packages.
#
# Usage: build_interfaces.sh [VENV]           (default: the repository's .venv)
#        build_interfaces.sh [VENV] --force   (rebuild even if tf2_msgs already imports)
#        build_interfaces.sh [VENV] --uninstall
# Idempotent: does nothing when tf2_msgs already imports with its typesupport.
# When the build is impossible here (no cmake / C compiler / Python headers / generator
# wheels) or fails, it prints ONE line and exits 0, so `make install` still succeeds;
# set ROS_INTERFACES_STRICT=1 to exit 1 instead.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV=""
MODE=build
for arg in "$@"; do
  case "$arg" in
    --force) MODE=force ;;
    --uninstall) MODE=uninstall ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) VENV="$arg" ;;
  esac
done
VENV="${VENV:-$HERE/../../.venv}"
VENV_ABS="$(cd "$VENV" 2>/dev/null && pwd)" \
  || { echo "ros_interfaces: tf2_msgs not built (no venv at $VENV); mfapr_ros will not publish /tf"; exit 0; }
VENV="$VENV_ABS"
PY="$VENV/bin/python"
PACKAGES=(tf2_msgs)

skip() {  # one clear line, then exit 0 (or 1 when strict)
  echo "ros_interfaces: tf2_msgs not built ($*); mfapr_ros will not publish /tf"
  [ "${ROS_INTERFACES_STRICT:-0}" = 1 ] && exit 1
  exit 0
}

# A real check: the module imports AND its C typesupport (what rclpy needs to publish) loads.
# (The venv's ros_wheels_bootstrapper re-execs python with LD_LIBRARY_PATH=<venv>/lib.)
ORIG_LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"
works() {
  env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE LD_LIBRARY_PATH="$ORIG_LD_LIBRARY_PATH" \
    "$PY" - "$1" >/dev/null 2>&1 <<'EOF'
import importlib, sys
pkg = sys.argv[1]
importlib.import_module(pkg + '.msg')
from rosidl_generator_py import import_type_support
import_type_support(pkg)
if pkg == 'tf2_msgs':
    from tf2_msgs.msg import TFMessage
    TFMessage.__class__.__import_type_support__()
    assert TFMessage.__class__._TYPE_SUPPORT is not None
EOF
}

uninstall() {
  local pkg="$1" manifest="$VENV/share/$1/install_manifest.txt"
  [ -f "$manifest" ] || return 0
  while IFS= read -r f; do [ -n "$f" ] && rm -f -- "$f"; done < "$manifest"
  rm -rf -- "$VENV/share/$pkg" "$VENV/include/$pkg" "$VENV"/lib/python3*/site-packages/"$pkg" \
            "$VENV"/lib/python3*/site-packages/"$pkg"-*.egg-info
}

[ -x "$PY" ] || skip "no python at $PY"

if [ "$MODE" = uninstall ]; then
  for pkg in "${PACKAGES[@]}"; do uninstall "$pkg"; done
  echo "ros_interfaces: removed ${PACKAGES[*]} from $VENV"
  exit 0
fi

if [ "$MODE" = build ] && works tf2_msgs; then
  echo "ros_interfaces: tf2_msgs already installed in $VENV"
  exit 0
fi

# ---- can we build here? -----------------------------------------------------------------
CMAKE="$(command -v cmake || true)"
[ -z "$CMAKE" ] && [ -x "$VENV/bin/cmake" ] && CMAKE="$VENV/bin/cmake"
[ -n "$CMAKE" ] || skip "no cmake; apt-get install cmake"
CMAKE_VER="$("$CMAKE" --version 2>/dev/null | sed -n '1s/[^0-9]*\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
read -r CMV_MAJ CMV_MIN <<<"${CMAKE_VER:-0 0}"
[ "$CMV_MAJ" -gt 3 ] || { [ "$CMV_MAJ" -eq 3 ] && [ "$CMV_MIN" -ge 19 ]; } \
  || skip "cmake >= 3.19 needed, found '$("$CMAKE" --version 2>&1 | head -1)'"
command -v "${CC:-cc}" >/dev/null 2>&1 || skip "no C compiler; apt-get install build-essential"
command -v "${CXX:-c++}" >/dev/null 2>&1 || skip "no C++ compiler; apt-get install build-essential"
"$PY" -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
  >/dev/null 2>&1 || skip "no Python.h for $PY; apt-get install python3-dev"
"$PY" -c 'import numpy, em, lark, catkin_pkg, ament_package, rosidl_generator_py' >/dev/null 2>&1 \
  || skip "generator wheels missing in $VENV; pip install -r requirements.txt"
for d in ament_cmake rosidl_default_generators builtin_interfaces geometry_msgs action_msgs; do
  [ -d "$VENV/share/$d/cmake" ] || skip "$d (cmake files) missing in $VENV; pip install -r requirements.txt"
done

# ---- build ------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/ros_interfaces.XXXXXX")"
LOG="$WORK/build.log"
JOBS="$(nproc 2>/dev/null || echo 2)"; [ "$JOBS" -gt 2 ] && JOBS=2
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1 LD_LIBRARY_PATH="$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
start=$SECONDS
for pkg in "${PACKAGES[@]}"; do
  [ "$MODE" = force ] && uninstall "$pkg"
  B="$WORK/$pkg"
  {
    # RPATH (not RUNPATH, so it also covers the wheels' libs loaded by ours): the built libs
    # find <venv>/lib by themselves, even without the bootstrapper's LD_LIBRARY_PATH.
    nice -n 19 "$CMAKE" -S "$HERE/$pkg" -B "$B" \
      -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
      -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
      -DPython3_EXECUTABLE="$PY" \
      -DCMAKE_PROJECT_INCLUDE="$HERE/pip_wheel_fixups.cmake" \
      -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
      '-DCMAKE_INSTALL_RPATH=$ORIGIN;$ORIGIN/../../..' \
      -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--disable-new-dtags \
      -DCMAKE_MODULE_LINKER_FLAGS=-Wl,--disable-new-dtags \
    && nice -n 19 "$CMAKE" --build "$B" -j "$JOBS" \
    && "$CMAKE" --install "$B" \
    && cp "$B/install_manifest.txt" "$VENV/share/$pkg/install_manifest.txt"
  } >>"$LOG" 2>&1 || skip "build failed, log kept: $LOG"
done

works tf2_msgs || skip "built but 'import tf2_msgs.msg' / its typesupport fails, log kept: $LOG"
rm -rf "$WORK"
echo "ros_interfaces: built ${PACKAGES[*]} into $VENV in $((SECONDS - start)) s"
