"""TensorRT-LLM-style in-flight batching, without time: admission, iteration planning, completion.

The emulator runs a ``Batcher`` in real time and the simulator in virtual time, so both schedule
requests identically. Each iteration takes the decoding requests (one token each) plus prompt chunks
of newly admitted requests up to ``max_num_tokens``; a request is admitted only while the paged KV
cache can reserve its prompt plus ``max_tokens`` (the GUARANTEED_NO_EVICT policy), so long contexts
limit concurrency and the rest wait.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from inference_pods.performance import ReplicaModel, Step


@dataclass(eq=False)
class Sequence:
    """One request inside an engine."""

    id: int
    prompt_tokens: int
    max_tokens: int
    arrived: float
    prefilled: int = 0
    generated: int = 0
    admitted_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None

    @property
    def reserved_tokens(self) -> int:
        return self.prompt_tokens + self.max_tokens

    @property
    def context(self) -> int:
        return self.prompt_tokens + self.generated


@dataclass
class Plan:
    step: Step
    chunks: list[tuple[Sequence, int]] = field(default_factory=list)
    decoding: list[Sequence] = field(default_factory=list)


class Batcher:
    def __init__(self, model: ReplicaModel) -> None:
        self.model = model
        self.waiting: deque[Sequence] = deque()
        self.active: list[Sequence] = []
        self.kv_capacity = model.kv_capacity_tokens
        self.kv_reserved = 0
        self.pending_prompt_tokens = 0  # prompt tokens not yet prefilled, waiting or admitted

    def add(self, sequence: Sequence) -> None:
        self.waiting.append(sequence)
        self.pending_prompt_tokens += sequence.prompt_tokens - sequence.prefilled

    @property
    def idle(self) -> bool:
        return not self.waiting and not self.active

    def admit(self, now: float) -> None:
        while self.waiting and len(self.active) < self.model.batch_limit:
            head = self.waiting[0]
            if self.kv_reserved + head.reserved_tokens > self.kv_capacity and self.active:
                return  # wait for KV space; an empty engine takes even an oversized request
            self.waiting.popleft()
            head.admitted_at = now
            self.kv_reserved += head.reserved_tokens
            self.active.append(head)

    def plan(self) -> Plan | None:
        """The next iteration's work, or None when nothing is admitted."""
        if not self.active:
            return None
        decoding = [s for s in self.active if s.prefilled >= s.prompt_tokens]
        budget = self.model.token_budget - len(decoding)
        chunks: list[tuple[Sequence, int]] = []
        prefill_context = 0
        for sequence in self.active:
            remaining = sequence.prompt_tokens - sequence.prefilled
            if remaining <= 0 or budget <= 0:
                continue
            if not self.model.chunked_prefill and remaining > budget and chunks:
                break  # without chunking a prompt goes whole, in a step of its own if need be
            take = remaining if not self.model.chunked_prefill else min(remaining, budget)
            chunks.append((sequence, take))
            # Each new token attends to the tokens before it: start + (take + 1) / 2 on average.
            prefill_context += take * sequence.prefilled + take * (take + 1) // 2
            budget -= take
        step = Step(
            prefill_tokens=sum(take for _, take in chunks),
            prefill_context=prefill_context,
            decode_requests=len(decoding),
            decode_context=sum(s.context for s in decoding),
        )
        return Plan(step, chunks, decoding)

    def complete(self, plan: Plan, now: float) -> list[Sequence]:
        """Apply a finished iteration at ``now``; returns the sequences that emitted a token, in order.
        A prompt's last chunk ends its context phase with the first token."""
        emitted: list[Sequence] = []
        for sequence in plan.decoding:
            self._emit(sequence, now)
            emitted.append(sequence)
        for sequence, take in plan.chunks:
            sequence.prefilled += take
            self.pending_prompt_tokens -= take
            if sequence.prefilled >= sequence.prompt_tokens:
                self._emit(sequence, now)
                emitted.append(sequence)
        self.active = [s for s in self.active if s.finished_at is None]
        return emitted

    def decode_run_length(self, plan: Plan) -> int:
        """Iterations that ``plan`` can repeat unchanged: a decode-only batch stays the same until its
        first request finishes, as long as nothing new is admitted (the caller checks arrivals)."""
        if plan.chunks or not plan.decoding:
            return 1
        return min(s.max_tokens - s.generated for s in plan.decoding)

    def complete_decodes(self, plan: Plan, steps: int, now: float) -> list[Sequence]:
        """Apply ``steps`` repeats of a decode-only ``plan`` (at most ``decode_run_length``) ending at
        ``now``; the same as ``steps`` calls of ``complete`` since no request finishes before the last.
        Returns the requests that finished."""
        finished: list[Sequence] = []
        for sequence in plan.decoding:
            sequence.generated += steps
            if sequence.generated >= sequence.max_tokens:
                sequence.finished_at = now
                self.kv_reserved -= sequence.reserved_tokens
                finished.append(sequence)
        if finished:
            self.active = [s for s in self.active if s.finished_at is None]
        return finished

    def _emit(self, sequence: Sequence, now: float) -> None:
        sequence.generated += 1
        if sequence.first_token_at is None:
            sequence.first_token_at = now
        if sequence.generated >= sequence.max_tokens:
            sequence.finished_at = now
            self.kv_reserved -= sequence.reserved_tokens


def closed_loop_throughput(model: ReplicaModel, input_tokens: int, output_tokens: int,
                           requests: int | None = None) -> float:
    """Output tokens/s of this scheduler in virtual time with ``requests`` fixed-length requests queued at once
    (trtllm-bench's offline run; 12 x the concurrency by default), over the steady middle: from the completion of
    the first four batches (the start, all prompts at once, takes a few cycles to settle) to the start of the
    drain (when fewer requests wait than are in flight). Decode-only runs are fast-forwarded as the
    simulator does (``ReplicaModel.decode_run_ends``)."""
    n = model.max_concurrency(input_tokens, output_tokens)
    total = requests if requests is not None else 12 * n
    batcher = Batcher(model)
    for i in range(total):
        batcher.add(Sequence(i, input_tokens, output_tokens, 0.0))
    now, emitted, finished = 0.0, 0, 0
    window: tuple[float, int] | None = None
    while not batcher.idle:
        batcher.admit(now)
        plan = batcher.plan()
        if plan is None:
            break
        steps = batcher.decode_run_length(plan)
        if steps > 1:
            now = model.decode_run_ends(now, plan.step.decode_requests, plan.step.decode_context, steps,
                                        float("inf"))[-1]
            done = batcher.complete_decodes(plan, steps, now)
            emitted += steps * len(plan.decoding)
        else:
            now += model.step_seconds(plan.step)
            out = batcher.complete(plan, now)
            emitted += len(out)
            done = [s for s in out if s.finished_at is not None]
        finished += len(done)
        if window is None and finished >= 4 * n:
            window = (now, emitted)
        if window is not None and len(batcher.waiting) < n:
            break
    if window is None or now <= window[0]:
        return emitted / now
    return (emitted - window[1]) / (now - window[0])
