"""Workloads: the columnar ``Workload``, trace readers and writers, the synthetic generator."""

from sageserve_env.workload.generator import generate, load_workload
from sageserve_env.workload.readers import (DEFAULT_MODEL_POPULARITY, load_trace, read_azure, read_canonical,
                                            read_sageserve, write_canonical)
from sageserve_env.workload.workload import IW, NIW, TIER_NAMES, Workload, WorkloadError

__all__ = ["DEFAULT_MODEL_POPULARITY", "IW", "NIW", "TIER_NAMES", "Workload", "WorkloadError", "generate",
           "load_trace", "load_workload", "read_azure", "read_canonical", "read_sageserve", "write_canonical"]
