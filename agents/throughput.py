"""How much work one instance sustains, derived from the performance model (never a constant).

The long-term planner needs the IW prompt tokens per second one instance of an endpoint serves;
Chiron needs the tokens per second it drains from the NIW queue. Both come from a steady-state
picture of continuous batching with ``b`` requests in the batch, each of ``prompt`` and
``output`` tokens (the endpoint's means so far):

- a request stays for ``output`` decode iterations, so an iteration retires ``b / output``
  requests and prefills as many new prompts: ``b * prompt / output`` tokens, at most
  ``max_batch_tokens`` (the prefill budget then caps the request rate);
- the batch holds about ``b * (prompt + output / 2)`` KV tokens (contexts are half generated on
  average), which sets the decode cost; the iteration time is ``perf.iteration_time``;
- requests per second = ``min(b / output, max_batch_tokens / prompt) / iteration_time``.

The operating batch is the most productive one that (1) reserves at most ``target_utilization``
of the instance's KV capacity (the simulator reserves prompt + output tokens per request; 0.5 is
the reactive scale-up threshold and the level up to which NIW work is fed, so a planned endpoint
sits where the reactive rule is content), (2) fits ``max_batch_size`` and (3) keeps one iteration
within ``max_iteration_s``: the time between output tokens a user sees, and a bound on TTFT
(a prompt of ``max_batch_tokens`` is prefilled in one iteration).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

# Means of the public Azure LLM inference trace (conversation, Nov 2023, 19,366 requests),
# used for an endpoint until it has seen its first interactive request, and the capacity
# formula itself, live in ``sageserve_env.capacity`` (the env sizes v1 starts with it).
from sageserve_env.capacity import (DEFAULT_OUTPUT_TOKENS, DEFAULT_PROMPT_TOKENS, Capacity,  # noqa: F401
                                    instance_capacity)
from sageserve_env.workload.workload import IW


class TokenSizes:
    """Mean prompt and output tokens of the interactive requests each endpoint (home region,
    model) has received so far, updated incrementally from the arrivals of the past only."""

    def __init__(self, env) -> None:
        self._view = env.view()
        shape = (env.n_regions, env.n_models)
        self._seen = 0
        self._count = np.zeros(shape)
        self._prompt = np.zeros(shape)
        self._output = np.zeros(shape)

    def means(self) -> Tuple[np.ndarray, np.ndarray]:
        """(prompt, output) mean tokens per endpoint, with the Azure-trace defaults where none
        arrived yet."""
        hi, new = self._view.arrived_since(self._seen)
        if hi > self._seen:
            iw = new["tier"] == IW
            flat = new["region"][iw] * self._count.shape[1] + new["model"][iw]
            n = self._count.size
            self._count += np.bincount(flat, minlength=n).reshape(self._count.shape)
            self._prompt += np.bincount(flat, new["prompt_tokens"][iw], minlength=n).reshape(self._count.shape)
            self._output += np.bincount(flat, new["output_tokens"][iw], minlength=n).reshape(self._count.shape)
            self._seen = hi
        seen = self._count > 0
        count = np.maximum(self._count, 1)
        return (np.where(seen, self._prompt / count, DEFAULT_PROMPT_TOKENS),
                np.where(seen, self._output / count, DEFAULT_OUTPUT_TOKENS))


def endpoint_capacities(env, sizes: TokenSizes, **limits) -> np.ndarray:
    """``Capacity`` of one instance of every endpoint, shape (regions, models), object array."""
    view = env.view()
    kv = view.kv_capacity_tokens()
    prompt, output = sizes.means()
    batching = env.sim_config.batching
    out = np.empty(kv.shape, dtype=object)
    for r, m in np.ndindex(kv.shape):
        out[r, m] = instance_capacity(view.perf_model(r, m), kv[r, m], prompt[r, m], output[r, m],
                                      batching.max_batch_size, batching.max_batch_tokens, **limits)
    return out
