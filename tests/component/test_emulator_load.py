"""Emulated engine under a closed-loop concurrency sweep: ITL plateaus at saturation, TTFT grows past the knee."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from inference_pods.emulator.engine import EmulatedEngine
from inference_pods.performance import ReplicaModel

TIME_SCALE = 5.0  # emulated seconds per wall second
PROMPT, OUTPUT, ROUNDS = 200, 64, 3
BATCH = 16


def sweep_point(concurrency: int) -> tuple[float, float]:
    """Median TTFT and median per-request mean ITL, in emulated seconds."""
    replica = ReplicaModel.for_profiles("Llama-3.1-8B", "H100-SXM", max_batch_size=BATCH)

    async def run() -> tuple[list[float], list[float]]:
        engine = EmulatedEngine(replica, time_scale=TIME_SCALE, seed=1)
        engine.start()
        ttfts: list[float] = []
        itls: list[float] = []

        async def client() -> None:
            for _ in range(ROUNDS):
                request = engine.submit(PROMPT, OUTPUT)
                async for _token in engine.stream(request):
                    pass
                assert request.first_token_at is not None and request.finished_at is not None
                ttfts.append((request.first_token_at - request.arrived) * TIME_SCALE)
                itls.append((request.finished_at - request.first_token_at) / (OUTPUT - 1) * TIME_SCALE)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        await engine.stop()
        return ttfts, itls

    ttfts, itls = asyncio.run(run())
    return statistics.median(ttfts), statistics.median(itls)


@pytest.fixture(scope="module")
def sweep() -> dict[int, tuple[float, float]]:
    return {c: sweep_point(c) for c in (1, 4, BATCH, 4 * BATCH)}


def test_itl_at_low_load_follows_the_performance_model(sweep: dict[int, tuple[float, float]]) -> None:
    replica = ReplicaModel.for_profiles("Llama-3.1-8B", "H100-SXM", max_batch_size=BATCH)
    modelled = replica.decode_seconds(1, PROMPT + OUTPUT // 2)
    assert sweep[1][1] == pytest.approx(modelled, rel=0.25)
    assert sweep[1][0] == pytest.approx(replica.prefill_seconds(PROMPT), rel=0.5, abs=0.005)


def test_itl_plateaus_once_the_batch_is_full(sweep: dict[int, tuple[float, float]]) -> None:
    replica = ReplicaModel.for_profiles("Llama-3.1-8B", "H100-SXM", max_batch_size=BATCH)
    _, itl_full = sweep[BATCH]
    _, itl_over = sweep[4 * BATCH]
    assert itl_full == pytest.approx(replica.decode_seconds(BATCH, PROMPT + OUTPUT // 2), rel=0.25)
    assert itl_over == pytest.approx(itl_full, rel=0.25), "past the batch limit requests wait instead"


def test_ttft_grows_without_bound_past_the_knee(sweep: dict[int, tuple[float, float]]) -> None:
    ttft_below = sweep[BATCH][0]
    ttft_past = sweep[4 * BATCH][0]
    # 64 clients on 16 slots: most requests wait for whole requests (64 tokens) to finish first.
    request_seconds = OUTPUT * sweep[BATCH][1]
    assert ttft_past > ttft_below + request_seconds
    assert ttft_past > 5 * ttft_below
