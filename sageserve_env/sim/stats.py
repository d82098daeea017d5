"""The per-endpoint statistics array both fidelities write: shape (endpoints, ``len(Stat)``).

Endpoint ``e`` is region ``e // n_models``, model ``e % n_models``. Columns named by ``Stat``:
running totals since the start (the env differences them between decisions) and gauges of the
present state (instances, memory utilization, queues). The env's observation and reward, the
``SimView`` that heuristics read and the KPIs all come from it, so adding a figure is one new
``Stat`` member and the lines of each fidelity that produce it.
"""

from __future__ import annotations

from enum import IntEnum


class Stat(IntEnum):
    """Columns of the statistics array."""

    # running totals
    ARRIVED = 0  # requests routed to the endpoint (IW where routed, NIW at home)
    ARRIVED_PROMPT_TOKENS = 1  # their prompt tokens (IW only)
    COMPLETED = 2
    IW_FIRST_TOKENS = 3
    IW_TTFT_SUM = 4  # seconds, over the IW first tokens
    IW_SLO_MISSES = 5  # IW first tokens later than their SLO
    IW_E2E_MISSES = 6  # IW completions later than ``slo.iw_e2e_s``
    NIW_COMPLETED = 7
    NIW_DEADLINE_MISSES = 8  # NIW completions past their deadline
    DROPPED = 9
    RETRIED = 10  # requests taken off an instance that died in a fault (``sim/faults.py``), routed again
    # gauges of the present state
    ACTIVE = 11  # instances
    STARTING = 12
    DRAINING = 13
    SPOT_OWN = 14  # spot servers of the region still holding the endpoint's model
    UTILIZATION = 15  # mean memory utilization of the active instances (1.0 when none)
    UTILIZATION_MAX = 16
    BUSY_FRACTION = 17  # share of active instances holding any request (1.0 when none)
    QUEUED_IW_TOKENS = 18  # KV tokens (prompt + output) of requests waiting for a batch slot
    QUEUED_NIW_TOKENS = 19  # KV tokens in the NIW feed queue
    NIW_QUEUE_REQUESTS = 20  # requests in the NIW feed queue
    QUEUED_REQUESTS = 21  # requests arrived and waiting anywhere (for a batch slot, an instance, the NIW feed)
    IN_FLIGHT_REQUESTS = 22  # requests admitted to a batch (prefilling or decoding), draining instances' too


N_TOTALS = int(Stat.RETRIED) + 1  # the running totals are the first columns
TOTALS = tuple(Stat)[:N_TOTALS]
GAUGES = tuple(Stat)[N_TOTALS:]
