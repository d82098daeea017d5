"""The Gymnasium adapter over the simulator, and its registration."""

from sageserve_env.env.sageserve_env import SageServeEnv
from sageserve_env.env.view import SimView

__all__ = ["SageServeEnv", "SimView"]
