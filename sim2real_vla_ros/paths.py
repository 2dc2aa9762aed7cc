"""Where the package's installed share files (launch/, config/, urdf/, models/) are."""
import os
import sys

PACKAGE = "sim2real_vla_ros"


def share_dir() -> str:
    """Return the package's share directory through the ament index.

    On a colcon install the ROS environment sets AMENT_PREFIX_PATH. In a plain venv
    (`pip install .` or `make setup`) the share files live under the venv prefix, which
    nothing adds to AMENT_PREFIX_PATH; we add sys.prefix explicitly in that case so
    the lookup still goes through ament_index_python and fails loudly if the package
    was not installed.
    """
    from ament_index_python.packages import get_package_share_directory

    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in prefixes:
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(prefixes + [sys.prefix])
    return get_package_share_directory(PACKAGE)


def share_path(*parts: str) -> str:
    """Path of a file under the package's share directory, e.g. share_path('urdf', 'x.xacro')."""
    return os.path.join(share_dir(), *parts)
