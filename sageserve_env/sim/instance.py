"""A server and, while it holds a model, the instance running on it with continuous batching.

Every server is always in exactly one state (``ACTIVE``, ``STARTING``, ``DRAINING``, ``SPOT``,
``FREE``). An instance admits requests when their KV cache (prompt + output tokens) fits in GPU
memory minus weights and the batch has room; interactive (IW) requests are admitted before
non-interactive (NIW) ones, first come first served within a tier, head of line blocking.
Admitted IW prompts are also prefilled ahead of admitted NIW prompts (priority scheduling), so
a batch job fed while the instance was quiet does not hold interactive requests behind its
prefill.

Iterations (ORCA/vLLM style): an iteration prefills up to ``max_batch_tokens`` prompt tokens
(long prompts are chunked over several iterations) while every sequence past its prefill
decodes one token. A request's first token is produced by the iteration that finishes its
prefill; it completes after ``output_tokens - 1`` further decode iterations.

Speed: while nothing is being prefilled the batch is fixed, so the instance jumps straight to
the next completion. Decode time is linear in the batch's KV tokens, which grow by the batch
size every iteration, so the duration of ``k`` iterations has a closed form (``run_time``).
An arrival that can be admitted cuts the run at the iteration boundary it falls into.

An instance reaches its simulator only through ``Host``; its endpoint's statistics row is a
Python list indexed by ``Stat`` (an update costs 55 ns there against 160 ns in a numpy row,
and there are several per request).
"""

from __future__ import annotations

from collections import deque
from heapq import heappop, heappush
from math import ceil, sqrt

from sageserve_env.sim.fleet import ACTIVE, DRAINING, STARTING
from sageserve_env.sim.host import Host
from sageserve_env.sim.perf_model import PerfModel, run_time
from sageserve_env.sim.requests import DropReason
from sageserve_env.sim.stats import Stat
from sageserve_env.workload.workload import IW, NIW

# the statistics columns the event loop writes, as plain ints (an IntEnum index costs 4x)
_COMPLETED, _IW_FIRST_TOKENS, _IW_TTFT_SUM, _IW_SLO_MISSES, _IW_E2E_MISSES, _NIW_COMPLETED, _NIW_DEADLINE_MISSES, \
    _DROPPED = map(int, (Stat.COMPLETED, Stat.IW_FIRST_TOKENS, Stat.IW_TTFT_SUM, Stat.IW_SLO_MISSES, Stat.IW_E2E_MISSES,
                         Stat.NIW_COMPLETED, Stat.NIW_DEADLINE_MISSES, Stat.DROPPED))


class Instance:
    """A model instance on one server of a region, serving ``endpoint`` (an ``Endpoint``).

    ``state`` is ``STARTING``, ``ACTIVE`` or ``DRAINING``, and ``SPOT`` once its server is
    donated (it serves no more; the fleet counts spot and free servers, which hold no instance).
    """

    __slots__ = (
        "host", "requests", "schedule", "region", "model", "state", "endpoint", "stats", "perf", "capacity",
        "wait_iw", "wait_niw", "prefill", "decoders", "iters", "batch_kv", "reserved",
        "pending_tokens", "waiting_tokens", "version", "busy", "run_start", "run_iters",
        "chunk_tokens", "chunk_count", "prefill_iw",
    )

    def __init__(self, host: Host, endpoint, perf: PerfModel, state: int) -> None:
        self.host = host
        self.requests = host.requests
        self.schedule = host.schedule
        self.region = endpoint.region
        self.model = endpoint.model
        self.state = state
        self.endpoint = endpoint
        self.stats = endpoint.stats
        self.perf = perf
        self.capacity = endpoint.capacity  # KV tokens that fit next to the weights
        self.wait_iw: deque = deque()  # routed here, not yet admitted
        self.wait_niw: deque = deque()
        self.prefill: deque = deque()  # [request, prompt tokens still to prefill]: IW then NIW, each FCFS
        self.prefill_iw = 0  # IW entries at the front of ``prefill``
        self.decoders: list = []  # heap of (decode iteration at which it completes, request)
        self.iters = 0  # decode iterations run so far (each iteration advances every decoder)
        self.batch_kv = 0  # KV tokens held by decoding sequences (prompt + generated)
        self.reserved = 0  # KV tokens reserved by admitted requests (prompt + output)
        self.pending_tokens = 0  # prompt + output tokens of requests here and not completed
        self.waiting_tokens = 0  # same, for requests not yet admitted
        self.version = 0  # bumped to cancel the scheduled event
        self.busy = False  # an iteration or a decode run is scheduled
        self.run_start = 0.0  # start of the scheduled iteration or run
        self.run_iters = 0  # decode iterations of the scheduled run (0: a mixed iteration, -1: wake-up or start-up)
        self.chunk_tokens = 0  # prefill tokens of the scheduled mixed iteration
        self.chunk_count = 0  # prefill entries it touches

    def start(self, ready_at: float) -> None:
        """A STARTING instance: become active at ``ready_at``."""
        self.run_iters = -1  # its next event is not the end of an iteration (see ``on_event``)
        self.version += 1
        self.schedule(ready_at, self)

    # -- state queries --------------------------------------------------------------------
    @property
    def n_requests(self) -> int:
        """Requests held: waiting, prefilling or decoding."""
        return len(self.wait_iw) + len(self.wait_niw) + len(self.prefill) + len(self.decoders)

    @property
    def in_flight(self) -> int:
        """Requests admitted to the batch (prefilling or decoding)."""
        return len(self.prefill) + len(self.decoders)

    @property
    def utilization(self) -> float:
        """KV tokens committed (admitted or waiting here) / KV capacity (GPU memory - weights)."""
        return self.pending_tokens / self.capacity if self.capacity else 0.0

    def held(self) -> list:
        """The requests held (waiting, prefilling or decoding), in arrival order."""
        return sorted([*self.wait_iw, *self.wait_niw, *(entry[0] for entry in self.prefill),
                       *(rid for _, rid in self.decoders)])

    # -- requests arriving ----------------------------------------------------------------
    def assign(self, rid: int, need: int, now: float) -> None:
        """Take a request routed to this instance (``need``: its prompt + output tokens, already
        added to the endpoint's ``committed``); it is admitted at the next iteration boundary."""
        self.pending_tokens += need
        self.waiting_tokens += need
        if self.requests.tier[rid] == IW:
            self.wait_iw.append(rid)
        else:
            self.wait_niw.append(rid)
        if not self.busy:
            if self.host.next_arrival_s == now:
                # more requests arrive at this instant: start once they are all here (IW first)
                self.busy = True
                self.run_iters = -1
                self.run_start = now
                self.version += 1
                self.schedule(now, self)
            else:
                self._boundary(now)
        elif self.run_start == now:  # the iteration scheduled at this instant has not begun: join it
            if self.run_iters >= 0 and self._head_fits():
                self._boundary(now)
        elif self.run_iters > 1 and self._head_fits():
            self._cut_run(now)

    def _head_fits(self) -> bool:
        """The batch has room and the first waiting request's KV cache fits next to the reserved."""
        if len(self.prefill) + len(self.decoders) >= self.host.max_batch_size:
            return False
        req = self.requests
        rid = (self.wait_iw or self.wait_niw)[0]
        return self.reserved + req.prompt[rid] + req.output[rid] <= self.capacity

    def _cut_run(self, now: float) -> None:
        """End the current decode run at the first boundary at or after ``now``: the smallest
        ``k >= 1`` with ``run_time(k) >= now - run_start`` (a root of the quadratic, then exact
        steps, so the boundary does not depend on the root's rounding)."""
        elapsed = now - self.run_start
        a, cb = self.perf.decode_run(len(self.decoders), self.batch_kv)
        if cb > 0:  # cb / 2 * k ** 2 + (a - cb / 2) * k = elapsed
            d = a - 0.5 * cb
            k = ceil((sqrt(d * d + 2.0 * cb * elapsed) - d) / cb)
            if k < 1:
                k = 1
        else:
            k = ceil(elapsed / a) or 1
        while k > 1 and run_time(a, cb, k - 1) >= elapsed:
            k -= 1
        while run_time(a, cb, k) < elapsed:
            k += 1
        if k < self.run_iters:
            self.run_iters = k
            self.version += 1
            self.schedule(self.run_start + run_time(a, cb, k), self)

    # -- the iteration loop ---------------------------------------------------------------
    def on_event(self, now: float) -> None:
        """The scheduled iteration or run ended, or an idle instance wakes up to requests that
        arrived at ``now`` (or, when STARTING, the instance is ready)."""
        k = self.run_iters
        if k > 0:
            self.batch_kv += len(self.decoders) * k
            self.iters += k
        elif k == 0:
            decoders = self.decoders
            self.batch_kv += len(decoders)
            self.iters = iters = self.iters + 1
            prefill = self.prefill
            entry = prefill[0]
            if self.chunk_count == 1:  # the chunk is all from the first prompt
                entry[1] -= self.chunk_tokens
            else:
                budget = self.chunk_tokens
                for i in range(self.chunk_count):
                    entry = prefill[i]
                    take = entry[1] if entry[1] < budget else budget
                    entry[1] -= take
                    budget -= take
                entry = prefill[0]
            if not entry[1]:  # the prompts at the front are done: their first token
                req = self.requests
                prompt, output, tier, arrival, sla = req.prompt, req.output, req.tier, req.arrival, req.sla
                first_token_s, served_region, region, stats = req.first_token_s, req.served_region, self.region, self.stats
                while prefill and prefill[0][1] == 0:
                    rid = prefill.popleft()[0]
                    if first_token_s[rid] == first_token_s[rid]:  # not NaN: retried, it keeps its first token
                        if tier[rid] == IW:
                            self.prefill_iw -= 1
                    else:
                        first_token_s[rid] = now
                        served_region[rid] = region
                        if tier[rid] == IW:
                            self.prefill_iw -= 1
                            ttft = now - arrival[rid]
                            stats[_IW_FIRST_TOKENS] += 1
                            stats[_IW_TTFT_SUM] += ttft
                            if ttft > sla[rid]:
                                stats[_IW_SLO_MISSES] += 1
                    if output[rid] == 1:  # it completes with its first token
                        need = prompt[rid] + 1
                        self.reserved -= need
                        self.pending_tokens -= need
                        if self.state == ACTIVE:
                            self.endpoint.committed -= need
                        self._account_completions((rid,), now)
                    else:  # it decodes from here
                        heappush(decoders, (iters + output[rid] - 1, rid))
                        self.batch_kv += prompt[rid] + 1
        elif self.state == STARTING:  # checked last: start-ups are rare events
            self.host.activated(self, now)
            return
        self.busy = False
        self._boundary(now)

    def _account_completions(self, rids, now: float) -> None:
        """Completion records and statistics of requests that completed at ``now``."""
        req = self.requests
        completion_s, tier, arrival, sla = req.completion_s, req.tier, req.arrival, req.sla
        iw_e2e_s = self.host.iw_e2e_s
        stats = self.stats
        for rid in rids:
            completion_s[rid] = now
            if tier[rid] == NIW:
                stats[_NIW_COMPLETED] += 1
                if now - arrival[rid] > sla[rid]:
                    stats[_NIW_DEADLINE_MISSES] += 1
            elif iw_e2e_s is not None and now - arrival[rid] > iw_e2e_s:
                stats[_IW_E2E_MISSES] += 1
        stats[_COMPLETED] += len(rids)

    def _boundary(self, now: float) -> None:
        """At an iteration boundary: retire finished sequences, admit, schedule what is next."""
        decoders = self.decoders
        feed = False
        if decoders and decoders[0][0] <= self.iters:
            iters = self.iters
            req = self.requests
            prompt, output = req.prompt, req.output
            done = []
            freed = 0
            while decoders and decoders[0][0] <= iters:
                rid = heappop(decoders)[1]
                freed += prompt[rid] + output[rid]
                done.append(rid)
            self.reserved -= freed
            self.pending_tokens -= freed
            self.batch_kv -= freed  # their contexts (prompt + every output token) leave the batch
            if self.state == ACTIVE:
                self.endpoint.committed -= freed
                feed = bool(self.endpoint.niw_queue)  # completions made room: feed NIW work (last)
            self._account_completions(done, now)
        if self.wait_iw or self.wait_niw:
            self._admit(now)
        prefill = self.prefill
        if prefill:
            budget = self.host.max_batch_tokens
            if len(prefill) == 1:
                left = prefill[0][1]
                tokens = left if left < budget else budget
                count = 1
            else:
                tokens = count = 0
                for entry in prefill:
                    take = entry[1] if entry[1] < budget else budget
                    tokens += take
                    budget -= take
                    count += 1
                    if not budget:
                        break
            self.chunk_tokens = tokens
            self.chunk_count = count
            self.run_iters = 0
            self.run_start = now
            self.busy = True
            self.version += 1
            perf = self.perf
            if perf.mixed_prefill_factor is None:
                # perf.iteration_time(tokens, len(decoders), self.batch_kv) with tokens > 0, inline,
                # as is the next branch's decode run: together they save 2.4% of the instructions
                # per request at 1x load (69.3k -> 67.7k; bench/bench_simulator.py's workload
                # under callgrind)
                t = ((perf.prefill_base_s + (perf.prefill_per_token_s + perf.prefill_per_token_sq_s * tokens) * tokens)
                     + perf.decode_per_seq_s * len(decoders) + perf.decode_per_kv_token_s * self.batch_kv)
            else:
                t = perf.iteration_time(tokens, len(decoders), self.batch_kv)
            self.schedule(now + t, self)
        elif decoders:
            self.run_iters = k = decoders[0][0] - self.iters
            self.run_start = now
            self.busy = True
            self.version += 1
            # run_time(*perf.decode_run(b, self.batch_kv), k), inline (see the mixed iteration above)
            perf = self.perf
            b = len(decoders)
            c = perf.decode_per_kv_token_s
            a = perf.decode_base_s + perf.decode_per_seq_s * b + c * self.batch_kv
            self.schedule(now + (k * a + c * b * (k * (k - 1) // 2)), self)
        elif self.state == DRAINING and not self.wait_iw and not self.wait_niw:
            self.host.drained(self, now)
        if feed:
            self.endpoint.feed(now)

    def _admit(self, now: float) -> None:
        """Admit waiting requests, IW first, each tier first come first served, while the batch has
        room and the head's KV cache fits (head of line blocking)."""
        req = self.requests
        prompt, output = req.prompt, req.output
        prefill = self.prefill
        room = self.host.max_batch_size - len(prefill) - len(self.decoders)
        capacity = self.capacity
        reserved = self.reserved
        admitted = 0  # tokens of the requests admitted
        queue = self.wait_iw
        if queue:
            at = self.prefill_iw  # IW prompts go after the IW ones and before the NIW ones
            while queue and room > 0:
                rid = queue[0]
                need = prompt[rid] + output[rid]
                if reserved + need > capacity:
                    break
                queue.popleft()
                room -= 1
                reserved += need
                admitted += need
                if at == len(prefill):
                    prefill.append([rid, prompt[rid]])
                else:
                    prefill.insert(at, [rid, prompt[rid]])
                at += 1
            self.prefill_iw = at
            if queue and room > 0:  # head of line blocking: no NIW request overtakes
                self.reserved = reserved
                self.waiting_tokens -= admitted
                return
        queue = self.wait_niw
        while queue and room > 0:
            rid = queue[0]
            need = prompt[rid] + output[rid]
            if reserved + need > capacity:
                break
            queue.popleft()
            room -= 1
            reserved += need
            admitted += need
            prefill.append([rid, prompt[rid]])
        self.reserved = reserved
        self.waiting_tokens -= admitted

    def expire(self, rid: int, now: float) -> None:
        """Drop waiting IW request ``rid`` (the oldest here: the queue is first come first
        served), then admit behind it if that made room."""
        queue = self.wait_iw
        if queue[0] == rid:
            queue.popleft()
        else:
            queue.remove(rid)
        need = self.requests.prompt[rid] + self.requests.output[rid]
        self.waiting_tokens -= need
        self.pending_tokens -= need
        if self.state == ACTIVE:
            self.endpoint.committed -= need
        self.requests.drop_reason[rid] = int(DropReason.IW_TIMEOUT)
        self.stats[_DROPPED] += 1
        if self.busy and self.run_iters > 1 and (self.wait_iw or self.wait_niw) and self._head_fits():
            self._cut_run(now)
