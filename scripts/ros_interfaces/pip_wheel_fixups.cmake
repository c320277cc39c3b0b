# Injected with -DCMAKE_PROJECT_INCLUDE=... by build_interfaces.sh (the shipped
# package sources stay verbatim upstream).
#
# The PyPI ROS 2 wheels export CMake targets (<pkg>::<pkg>__rosidl_generator_py)
# whose INTERFACE_INCLUDE_DIRECTORIES still name the wheel build machine's
# Python/NumPy headers (/opt/python/cp311-cp311/...). CMake refuses to generate
# with non-existent imported include dirs, so at the end of configuring we drop
# such paths; our own Python3/NumPy include dirs are added by rosidl_generator_py.
function(_pip_wheel_fixup_imported_includes)
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_t IN LISTS _targets)
    get_target_property(_inc ${_t} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _inc)
      continue()
    endif()
    set(_keep "")
    set(_changed FALSE)
    foreach(_d IN LISTS _inc)
      if(_d MATCHES "^\\$<" OR EXISTS "${_d}")
        list(APPEND _keep "${_d}")
      else()
        set(_changed TRUE)
      endif()
    endforeach()
    if(_changed)
      set_target_properties(${_t} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_keep}")
    endif()
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _pip_wheel_fixup_imported_includes)
