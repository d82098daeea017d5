"""The requests of a detailed simulation: the columns the event loop reads, as Python lists,
and what became of every request (first token, completion, serving region, drop reason)."""

from __future__ import annotations

import math
from enum import IntEnum
from typing import Dict, List, Sequence, Tuple

import numpy as np

from sageserve_env.workload.workload import IW, NIW, Workload


class DropReason(IntEnum):
    """Why a request was given up (``NONE``: it was not)."""

    NONE = 0
    TOO_LARGE = 1  # its KV cache exceeds an instance's memory
    IW_TIMEOUT = 2  # IW, waited longer than ``slo.drop_iw_after_s`` for a batch slot


DROP_REASONS = ("", "too_large", "iw_timeout")  # names, indexed by DropReason


class Requests:
    """Columns of the workload in the config's region and model indices, and the records.

    ``stream`` is when each request reaches a router: its arrival plus the routing delay.
    """

    def __init__(self, workload: Workload, region_names: Sequence[str], model_names: Sequence[str],
                 routing_delay_s: float) -> None:
        w = workload
        idx = w.indexed(region_names, model_names)
        self.workload = w
        self.n = len(w)
        self.arrival: List[float] = w.arrival_s.tolist()
        self.prompt: List[int] = w.prompt_tokens.astype(np.int64).tolist()
        self.output: List[int] = w.output_tokens.astype(np.int64).tolist()
        self.tier: List[int] = w.tier.astype(np.int64).tolist()
        self.sla: List[float] = w.sla_s.tolist()
        self.model: List[int] = idx.model.tolist()
        self.region: List[int] = idx.region.tolist()
        self.order: List[Tuple[int, ...]] = [idx.priority_orders[p] for p in w.priority.tolist()]
        self.stream: List[float] = (w.arrival_s + routing_delay_s).tolist() if routing_delay_s else self.arrival
        self.first_token_s: List[float] = [math.nan] * self.n
        self.completion_s: List[float] = [math.nan] * self.n
        self.served_region: List[int] = [-1] * self.n
        self.drop_reason: List[int] = [int(DropReason.NONE)] * self.n

    def records(self, arrived: int) -> Dict[str, np.ndarray]:
        """Per-request columns of the first ``arrived`` requests (NaN where a time is not reached yet)."""
        w, n = self.workload, arrived
        return {
            "arrival_s": w.arrival_s[:n],
            "region": np.asarray(self.region[:n], dtype=np.int16),
            "model": np.asarray(self.model[:n], dtype=np.int16),
            "tier": w.tier[:n],
            "prompt_tokens": w.prompt_tokens[:n],
            "output_tokens": w.output_tokens[:n],
            "sla_s": w.sla_s[:n],
            "batch_id": w.batch_id[:n],
            "served_region": np.asarray(self.served_region[:n], dtype=np.int16),
            "first_token_s": np.asarray(self.first_token_s[:n]),
            "completion_s": np.asarray(self.completion_s[:n]),
            "drop_reason": np.asarray(self.drop_reason[:n], dtype=np.int8),
        }

    def overdue(self, arrived: int, now: float) -> Tuple[int, int]:
        """IW requests with no first token past their SLO, NIW requests unfinished past their
        deadline (neither dropped), among the first ``arrived``, as of ``now``."""
        w, n = self.workload, arrived
        late = w.arrival_s[:n] + w.sla_s[:n] < now
        alive = np.asarray(self.drop_reason[:n]) == DropReason.NONE
        iw = late & alive & (w.tier[:n] == IW) & np.isnan(np.asarray(self.first_token_s[:n]))
        niw = late & alive & (w.tier[:n] == NIW) & np.isnan(np.asarray(self.completion_s[:n]))
        return int(iw.sum()), int(niw.sum())
