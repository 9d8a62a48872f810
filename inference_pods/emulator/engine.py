"""An emulated TensorRT-LLM engine: in-flight batching in real time, timed by the performance model.

Each iteration takes the decoding requests (one token each) plus prompt chunks of waiting requests up
to ``max_num_tokens``, and sleeps ``ReplicaModel.step_seconds`` of that work (divided by
``time_scale``). Requests are admitted only while the paged KV cache can hold their prompt plus
``max_tokens`` (TensorRT-LLM's GUARANTEED_NO_EVICT policy), so long contexts limit concurrency and the
rest wait in the queue. With nothing to do the loop waits on an event and uses no CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from inference_pods.performance import ReplicaModel, Step

KV_BLOCK_TOKENS = 64  # tokens per paged KV-cache block (TensorRT-LLM's tokens_per_block)
WORDS = ("the", "model", "token", "GPU", "batch", "cache", "serve", "fast", "latency", "fleet",
         "scale", "engine", "prompt", "stream", "kernel", "tensor")


class QueueFull(Exception):  # noqa: N818 - reads as what happened
    """The wait queue is at its limit; the caller answers 503/429."""


class Draining(Exception):  # noqa: N818
    """The engine is shutting down and takes no new requests."""


@dataclass
class Request:
    id: int
    prompt_tokens: int
    max_tokens: int
    arrived: float
    rng: random.Random
    prefilled: int = 0
    generated: int = 0
    admitted_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    tokens: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)

    @property
    def reserved_tokens(self) -> int:
        return self.prompt_tokens + self.max_tokens

    @property
    def context(self) -> int:
        return self.prompt_tokens + self.generated


@dataclass
class EngineStats:
    """Cumulative counters the metrics layer turns into Triton's metric families."""

    success: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    steps: int = 0
    busy_seconds: float = 0.0
    queue_seconds: float = 0.0
    compute_seconds: float = 0.0
    request_seconds: float = 0.0

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1


Observer = Callable[[Request], None]


class EmulatedEngine:
    def __init__(self, model: ReplicaModel, *, time_scale: float = 1.0, seed: int = 0,
                 max_queue: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self.time_scale = time_scale
        self.seed = seed
        self.max_queue = max_queue
        self.clock = clock
        self.waiting: deque[Request] = deque()
        self.active: list[Request] = []
        self.stats = EngineStats()
        self.kv_capacity = model.kv_capacity_tokens
        self.kv_reserved = 0
        self.draining = False
        self.on_first_token: list[Observer] = []
        self.on_finish: list[Observer] = []
        self._ids = itertools.count(1)
        self._wake = asyncio.Event()
        # Steps are laid end to end on this timeline, so the loop's own overhead (a fraction of a
        # millisecond per step) is absorbed instead of stretching every step.
        self._timeline = 0.0
        self._task: asyncio.Task[None] | None = None

    # -- public API ------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="engine")

    @property
    def alive(self) -> bool:
        """False once the iteration loop has died; liveness reports it so the pod is restarted."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def submit(self, prompt_tokens: int, max_tokens: int) -> Request:
        if self.draining:
            raise Draining("the server is shutting down")
        if len(self.waiting) >= self.max_queue:
            self.stats.fail("REJECTED")
            raise QueueFull(f"the request queue is full ({self.max_queue} waiting)")
        request_id = next(self._ids)
        request = Request(request_id, max(1, prompt_tokens), max(1, max_tokens), self.clock(),
                          random.Random(self.seed * 1_000_003 + request_id))
        self.waiting.append(request)
        self._wake.set()
        return request

    async def stream(self, request: Request) -> AsyncIterator[str]:
        """Tokens of ``request`` as the engine emits them."""
        while True:
            token = await request.tokens.get()
            if token is None:
                return
            yield token

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.active

    @property
    def in_flight(self) -> int:
        return len(self.waiting) + len(self.active)

    def kv_blocks(self) -> tuple[int, int]:
        """(max, used) paged KV-cache blocks."""
        used_tokens = sum(r.context for r in self.active)
        return self.kv_capacity // KV_BLOCK_TOKENS, -(-used_tokens // KV_BLOCK_TOKENS)

    # -- the iteration loop ----------------------------------------------------------------
    def _admit(self) -> None:
        while self.waiting and len(self.active) < self.model.max_batch_size:
            head = self.waiting[0]
            if self.kv_reserved + head.reserved_tokens > self.kv_capacity and self.active:
                return  # wait for KV space; an empty engine takes even an oversized request
            self.waiting.popleft()
            head.admitted_at = self.clock()
            self.kv_reserved += head.reserved_tokens
            self.active.append(head)

    def _plan(self) -> tuple[Step, list[tuple[Request, int]], list[Request]]:
        decoding = [r for r in self.active if r.prefilled >= r.prompt_tokens]
        budget = self.model.max_num_tokens - len(decoding)
        chunks: list[tuple[Request, int]] = []
        prefill_context = 0
        for request in self.active:
            remaining = request.prompt_tokens - request.prefilled
            if remaining <= 0 or budget <= 0:
                continue
            if not self.model.chunked_prefill and remaining > budget and chunks:
                break  # without chunking a prompt goes whole, in a step of its own if need be
            take = remaining if not self.model.chunked_prefill else min(remaining, budget)
            chunks.append((request, take))
            # Each new token attends to the tokens before it: start + (take + 1) / 2 on average.
            prefill_context += take * request.prefilled + take * (take + 1) // 2
            budget -= take
        step = Step(
            prefill_tokens=sum(take for _, take in chunks),
            prefill_context=prefill_context,
            decode_requests=len(decoding),
            decode_context=sum(r.context for r in decoding),
        )
        return step, chunks, decoding

    async def _run(self) -> None:
        while True:
            self._admit()
            if not self.active:
                self._wake.clear()
                await self._wake.wait()
                self._timeline = self.clock()
                continue
            step, chunks, decoding = self._plan()
            seconds = self.model.step_seconds(step) / self.time_scale
            # Continue the timeline while less than 50 ms behind it (sleeps overshoot by up to a
            # millisecond and later sleeps make up for it); start afresh after an idle spell.
            behind = self.clock() - self._timeline
            start = self._timeline if 0 <= behind < 0.05 else max(self.clock(), self._timeline)
            # A step cannot begin before the newest prompt it works on arrived.
            start = max(start, max((r.arrived for r, _ in chunks), default=start))
            self._timeline = now = start + seconds
            await asyncio.sleep(max(0.0, now - self.clock()))
            self.stats.steps += 1
            self.stats.busy_seconds += seconds
            for request in decoding:
                self._emit(request, now)
            for request, take in chunks:
                request.prefilled += take
                if request.prefilled >= request.prompt_tokens:
                    self._emit(request, now)  # the context phase ends with the first token
            self.active = [r for r in self.active if r.finished_at is None]

    def _emit(self, request: Request, now: float) -> None:
        request.generated += 1
        self.stats.generated_tokens += 1
        request.tokens.put_nowait(request.rng.choice(WORDS) + " ")
        if request.first_token_at is None:
            request.first_token_at = now
            for observer in self.on_first_token:
                observer(request)
        if request.generated >= request.max_tokens:
            request.finished_at = now
            request.tokens.put_nowait(None)
            self.kv_reserved -= request.reserved_tokens
            self.stats.success += 1
            self.stats.prompt_tokens += request.prompt_tokens
            admitted = request.admitted_at if request.admitted_at is not None else request.arrived
            self.stats.queue_seconds += admitted - request.arrived
            self.stats.compute_seconds += now - admitted
            self.stats.request_seconds += now - request.arrived
            for observer in self.on_finish:
                observer(request)

    async def drain(self) -> None:
        """Stop taking requests and return when every admitted and queued one has finished."""
        self.draining = True
        while not self.idle:
            await asyncio.sleep(0.01)
