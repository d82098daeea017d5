"""sageserve_env: a Gymnasium environment around a multi-region LLM-serving simulator.

``sageserve_env.sim`` is the simulator core (plain Python, no gymnasium), ``sageserve_env.workload``
reads and generates traces and forecasts demand, ``sageserve_env.env`` adapts the simulator to
Gymnasium. Importing the package registers the environment IDs (see ``registration``).
"""

from sageserve_env.config import ConfigError, SimConfig, load_config
from sageserve_env.registration import register_envs

register_envs()

__all__ = ["ConfigError", "SimConfig", "load_config"]
__version__ = "0.1.0"
