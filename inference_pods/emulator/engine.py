"""An emulated TensorRT-LLM engine: ``inference_pods.batching`` in real time, timed by the
performance model.

Each iteration sleeps ``ReplicaModel.step_seconds`` of its work (divided by ``time_scale``), on a
timeline that absorbs the event loop's own overhead. With nothing to do the loop waits on an event and
uses no CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from inference_pods.batching import Batcher, Sequence
from inference_pods.performance import ReplicaModel

KV_BLOCK_TOKENS = 64  # tokens per paged KV-cache block (TensorRT-LLM's tokens_per_block)
WORDS = ("the", "model", "token", "GPU", "batch", "cache", "serve", "fast", "latency", "fleet",
         "scale", "engine", "prompt", "stream", "kernel", "tensor")


class QueueFull(Exception):  # noqa: N818 - reads as what happened
    """The wait queue is at its limit; the caller answers 503/429."""


class Draining(Exception):  # noqa: N818
    """The engine is shutting down and takes no new requests."""


@dataclass(eq=False)
class Request(Sequence):
    """A sequence with what the HTTP layer needs: its token stream and its own seeded generator."""

    rng: random.Random = field(default_factory=random.Random)
    tokens: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)


@dataclass
class EngineStats:
    """Engine-wide counters sampled at scrape time (per-request figures go through observers)."""

    generated_tokens: int = 0
    steps: int = 0
    busy_seconds: float = 0.0  # wall seconds spent in iterations, for GPU utilisation


Observer = Callable[[Request], None]


class EmulatedEngine:
    def __init__(self, model: ReplicaModel, *, time_scale: float = 1.0, seed: int = 0,
                 max_queue: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        self.model = model
        self.time_scale = time_scale
        self.seed = seed
        self.max_queue = max_queue
        self.clock = clock
        self.batcher = Batcher(model)
        self.stats = EngineStats()
        self.kv_capacity = model.kv_capacity_tokens
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
        if len(self.batcher.waiting) >= self.max_queue:
            raise QueueFull(f"the request queue is full ({self.max_queue} waiting)")
        request_id = next(self._ids)
        request = Request(request_id, max(1, prompt_tokens), max(1, max_tokens), self.clock(),
                          rng=random.Random(self.seed * 1_000_003 + request_id))
        self.batcher.add(request)
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
    def waiting(self) -> list[Request]:
        return [r for r in self.batcher.waiting if isinstance(r, Request)]

    @property
    def active(self) -> list[Request]:
        return [r for r in self.batcher.active if isinstance(r, Request)]

    @property
    def idle(self) -> bool:
        return self.batcher.idle

    @property
    def in_flight(self) -> int:
        return len(self.batcher.waiting) + len(self.batcher.active)

    def kv_blocks(self) -> tuple[int, int]:
        """(max, used) paged KV-cache blocks."""
        used_tokens = sum(r.context for r in self.batcher.active)
        return self.kv_capacity // KV_BLOCK_TOKENS, -(-used_tokens // KV_BLOCK_TOKENS)

    # -- the iteration loop ----------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            self.batcher.admit(self.clock())
            plan = self.batcher.plan()
            if plan is None:
                self._wake.clear()
                await self._wake.wait()
                self._timeline = self.clock()
                continue
            seconds = self.model.step_seconds(plan.step) / self.time_scale
            # Continue the timeline while less than 50 ms behind it (sleeps overshoot by up to a
            # millisecond and later sleeps make up for it); start afresh after an idle spell.
            behind = self.clock() - self._timeline
            start = self._timeline if 0 <= behind < 0.05 else max(self.clock(), self._timeline)
            # A step cannot begin before the newest prompt it works on arrived.
            start = max(start, max((r.arrived for r, _ in plan.chunks), default=start))
            self._timeline = now = start + seconds
            await asyncio.sleep(max(0.0, now - self.clock()))
            self.stats.steps += 1
            self.stats.busy_seconds += seconds
            for sequence in self.batcher.complete(plan, now):
                if isinstance(sequence, Request):
                    self._emit(sequence, now)

    def _emit(self, request: Request, now: float) -> None:
        """Deliver the token the batcher just counted, and report first tokens and completions."""
        self.stats.generated_tokens += 1
        request.tokens.put_nowait(request.rng.choice(WORDS) + " ")
        if request.generated == 1:
            for observer in self.on_first_token:
                observer(request)
        if request.finished_at is not None:
            request.tokens.put_nowait(None)
            for observer in self.on_finish:
                observer(request)

    async def drain(self) -> None:
        """Stop taking requests and return when every admitted and queued one has finished."""
        self.draining = True
        while not self.idle:
            await asyncio.sleep(0.01)
