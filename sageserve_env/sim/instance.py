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
size every iteration, so the duration of ``k`` iterations has a closed form (``_run_time``).
An arrival that can be admitted cuts the run at the iteration boundary it falls into.
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from heapq import heappop, heappush
from math import ceil, sqrt
from typing import TYPE_CHECKING, Optional

from sageserve_env.workload.workload import IW, NIW

if TYPE_CHECKING:
    from sageserve_env.sim.endpoint import Endpoint
    from sageserve_env.sim.perf_model import PerfModel
    from sageserve_env.sim.simulator import Simulator

ACTIVE, STARTING, DRAINING, SPOT, FREE = range(5)
STATE_NAMES = ("active", "starting", "draining", "spot", "free")


class Instance:
    """One server of a region. ``model`` is the index of the model it holds, -1 for none."""

    __slots__ = (
        "sim", "index", "region", "model", "state", "endpoint", "perf", "capacity",
        "wait_iw", "wait_niw", "prefill", "decoders", "iters", "batch_kv", "reserved",
        "pending_tokens", "waiting_tokens", "version", "busy", "run_start", "run_iters",
        "chunk_tokens", "chunk_count", "ready_at", "prefill_iw",
    )

    def __init__(self, sim: "Simulator", index: int, region: int, model: int, state: int) -> None:
        self.sim = sim
        self.index = index
        self.region = region
        self.model = model
        self.state = state
        self.endpoint: Optional["Endpoint"] = None
        self.perf: Optional["PerfModel"] = None
        self.capacity = 0  # KV tokens that fit next to the weights
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
        self.ready_at = 0.0  # when a STARTING instance becomes active

    # -- state queries --------------------------------------------------------------------
    @property
    def n_requests(self) -> int:
        """Requests held: waiting, prefilling or decoding."""
        return len(self.wait_iw) + len(self.wait_niw) + len(self.prefill) + len(self.decoders)

    @property
    def utilization(self) -> float:
        """KV tokens committed (admitted or waiting here) / KV capacity (GPU memory - weights)."""
        return self.pending_tokens / self.capacity if self.capacity else 0.0

    # -- requests arriving ----------------------------------------------------------------
    def assign(self, rid: int, need: int, now: float) -> None:
        """Take a request routed to this instance (``need``: its prompt + output tokens, already
        added to the endpoint's ``committed``); it is admitted at the next iteration boundary."""
        sim = self.sim
        self.pending_tokens += need
        self.waiting_tokens += need
        if sim.tier[rid] == IW:
            self.wait_iw.append(rid)
        else:
            self.wait_niw.append(rid)
        if not self.busy:
            nxt = sim._next_arrival
            if nxt < sim.n_requests and sim._stream[nxt] == now:
                # more requests arrive at this instant: start once they are all here (IW first)
                self.busy = True
                self.run_iters = -1
                self.run_start = now
                self.version = version = self.version + 1
                insort(sim._events, (now, next(sim._seq), self, version))  # sim.schedule(now, self)
            else:
                self._boundary(now)
        elif self.run_start == now:  # the iteration scheduled at this instant has not begun: join it
            if self.run_iters >= 0 and self._head_fits():
                self._boundary(now)
        elif self.run_iters > 1 and self._head_fits():
            self._cut_run(now)

    def _head_fits(self) -> bool:
        """The batch has room and the first waiting request's KV cache fits next to the reserved."""
        sim = self.sim
        if len(self.prefill) + len(self.decoders) >= sim.max_batch_size:
            return False
        rid = (self.wait_iw or self.wait_niw)[0]
        return self.reserved + sim.prompt[rid] + sim.output[rid] <= self.capacity

    def _run_time(self, k: int) -> float:
        """Duration of the next ``k`` decode iterations of the current batch (``_boundary`` and
        ``_cut_run`` inline this formula)."""
        perf = self.perf
        b = len(self.decoders)
        c = perf.decode_per_kv_token_s
        a = perf.decode_base_s + perf.decode_per_seq_s * b + c * self.batch_kv
        return k * a + c * b * (k * (k - 1) // 2)

    def _cut_run(self, now: float) -> None:
        """End the current decode run at the first boundary at or after ``now``: the smallest
        ``k >= 1`` with ``_run_time(k) >= now - run_start`` (a root of the quadratic, then exact
        steps, so the boundary does not depend on the root's rounding)."""
        elapsed = now - self.run_start
        perf = self.perf
        b = len(self.decoders)
        c = perf.decode_per_kv_token_s
        a = perf.decode_base_s + perf.decode_per_seq_s * b + c * self.batch_kv
        cb = c * b  # self._run_time(k) == k * a + cb * (k * (k - 1) // 2), inline
        if cb > 0:  # cb / 2 * k ** 2 + (a - cb / 2) * k = elapsed
            d = a - 0.5 * cb
            k = ceil((sqrt(d * d + 2.0 * cb * elapsed) - d) / cb)
            if k < 1:
                k = 1
        else:
            k = ceil(elapsed / a) or 1
        while k > 1 and (k - 1) * a + cb * ((k - 1) * (k - 2) // 2) >= elapsed:
            k -= 1
        while k * a + cb * (k * (k - 1) // 2) < elapsed:
            k += 1
        if k < self.run_iters:
            self.run_iters = k
            self.version = version = self.version + 1
            sim = self.sim
            insort(sim._events, (self.run_start + (k * a + cb * (k * (k - 1) // 2)), next(sim._seq), self, version))

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
            if not entry[1]:
                sim = self.sim
                prompt, output, tier = sim.prompt, sim.output, sim.tier
                first_token_s, served_region, region = sim.first_token_s, sim.served_region, self.region
                while prefill and prefill[0][1] == 0:
                    rid = prefill.popleft()[0]
                    # its first token
                    first_token_s[rid] = now
                    served_region[rid] = region
                    sim.n_first_tokens += 1
                    if tier[rid] == IW:
                        self.prefill_iw -= 1
                        ep = self.endpoint
                        ttft = now - sim.arrival[rid]
                        ep.iw_first_tokens += 1
                        ep.iw_ttft_sum += ttft
                        if ttft > sim.sla[rid]:
                            ep.iw_slo_misses += 1
                    if output[rid] == 1:
                        self._complete(rid, now, decoding=False)
                    else:
                        heappush(decoders, (iters + output[rid] - 1, rid))
                        self.batch_kv += prompt[rid] + 1
        elif self.state == STARTING:  # checked last: start-ups are rare events
            self.sim.activate(self, now)
            return
        self.busy = False
        self._boundary(now)

    def _boundary(self, now: float) -> None:
        """At an iteration boundary: retire finished sequences, admit, schedule what is next."""
        decoders = self.decoders
        completed = 0
        feed = False
        if decoders and decoders[0][0] <= self.iters:
            iters = self.iters
            sim = self.sim
            prompt, output = sim.prompt, sim.output
            ep = self.endpoint
            completion_s, tier = sim.completion_s, sim.tier
            freed = 0
            while decoders and decoders[0][0] <= iters:
                rid = heappop(decoders)[1]
                # self._complete(rid, now, decoding=True) and sim.complete(rid, now, self), inline,
                # with the token counts updated once for all the batch's completions
                freed += prompt[rid] + output[rid]
                completion_s[rid] = now
                completed += 1
                if tier[rid] == NIW:
                    ep.niw_completed += 1
                    if now - sim.arrival[rid] > sim.sla[rid]:
                        ep.niw_deadline_misses += 1
                elif sim.iw_e2e_s is not None and now - sim.arrival[rid] > sim.iw_e2e_s:
                    ep.iw_e2e_misses += 1
            self.reserved -= freed
            self.pending_tokens -= freed
            self.batch_kv -= freed  # their contexts (prompt + every output token) leave the batch
            if self.state == ACTIVE:
                ep.committed -= freed
                feed = bool(ep.niw_queue)  # completions made room: feed NIW work (last)
            ep.completed += completed
            sim.n_completed += completed
        if self.wait_iw or self.wait_niw:
            self._admit(now)
        prefill = self.prefill
        if prefill:
            sim = self.sim
            budget = sim.max_batch_tokens
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
            self.version = version = self.version + 1
            perf = self.perf
            if perf.mixed_prefill_factor is None:
                # now + perf.iteration_time(tokens, len(decoders), self.batch_kv) (tokens > 0), inline
                t = now + ((perf.prefill_base_s + (perf.prefill_per_token_s + perf.prefill_per_token_sq_s * tokens)
                            * tokens) + perf.decode_per_seq_s * len(decoders) + perf.decode_per_kv_token_s * self.batch_kv)
            else:
                t = now + perf.iteration_time(tokens, len(decoders), self.batch_kv)
            insort(sim._events, (t, next(sim._seq), self, version))  # sim.schedule(t, self)
        elif decoders:
            self.run_iters = k = decoders[0][0] - self.iters
            self.run_start = now
            self.busy = True
            self.version = version = self.version + 1
            # now + self._run_time(k), inline
            perf = self.perf
            b = len(decoders)
            c = perf.decode_per_kv_token_s
            a = perf.decode_base_s + perf.decode_per_seq_s * b + c * self.batch_kv
            sim = self.sim
            insort(sim._events, (now + (k * a + c * b * (k * (k - 1) // 2)), next(sim._seq), self, version))
        elif self.state == DRAINING and not self.wait_iw and not self.wait_niw:
            self.sim.drained(self, now)
        if feed:
            self.endpoint.feed(now)

    def _admit(self, now: float) -> None:
        """Admit waiting requests, IW first, each tier first come first served, while the batch has
        room and the head's KV cache fits (head of line blocking)."""
        sim = self.sim
        prompt, output = sim.prompt, sim.output
        prefill = self.prefill
        room = sim.max_batch_size - len(prefill) - len(self.decoders)
        capacity = self.capacity
        reserved = self.reserved
        admitted = 0  # tokens of the requests admitted
        queue = self.wait_iw
        if queue:
            drop_after = sim.drop_iw_after_s
            at = self.prefill_iw  # IW prompts go after the IW ones and before the NIW ones
            while queue and room > 0:
                rid = queue[0]
                need = prompt[rid] + output[rid]
                if drop_after is not None and now - sim.arrival[rid] > drop_after:
                    queue.popleft()
                    self._forget(need)
                    sim.drop(rid, "iw_timeout", self.endpoint)
                    continue
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

    def _forget(self, need: int) -> None:
        self.waiting_tokens -= need
        self.pending_tokens -= need
        if self.state == ACTIVE:
            self.endpoint.committed -= need

    def _complete(self, rid: int, now: float, decoding: bool) -> None:
        sim = self.sim
        need = sim.prompt[rid] + sim.output[rid]
        self.reserved -= need
        self.pending_tokens -= need
        if decoding:  # its context (prompt + every output token) leaves the batch
            self.batch_kv -= need
        if self.state == ACTIVE:
            self.endpoint.committed -= need
        sim.complete(rid, now, self)

    def load(self, endpoint: "Endpoint", perf: "PerfModel", capacity: int) -> None:
        """Serve ``endpoint`` (its model's weights loaded or being loaded); the simulator sets
        ``model`` and ``state`` together so its state counts stay exact."""
        self.endpoint = endpoint
        self.perf = perf
        self.capacity = capacity
