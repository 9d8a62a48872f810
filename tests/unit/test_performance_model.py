"""The GPU performance model: calibration against ../shared/calibration, and its physical shape."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from inference_pods.performance import ReplicaModel, Step, engine_load_seconds, weights_fit
from inference_pods.profiles import GPUS, MODELS

CALIBRATION = Path(__file__).resolve().parents[3] / "shared" / "calibration" / "README.md"
SATURATION_SETUPS = [("Llama-3.1-8B", 1), ("Llama-3.3-70B", 2), ("Llama-3.1-405B", 8)]
LLAMA2_70B = MODELS["Llama-2-70B"]


def saturation_rows() -> list[tuple[int, int, str, int, int]]:
    """(ISL, OSL, model, TP, published tokens/s) for every H100 cell of the trtllm-bench table."""
    if not CALIBRATION.exists():
        pytest.skip("../shared/calibration is not beside the checkout")
    rows = []
    for line in CALIBRATION.read_text().splitlines():
        match = re.match(r"\|\s*(\d+)/(\d+)\s*\|(.*)\|\s*$", line)
        if not match:
            continue
        cells = [c.strip().replace(",", "") for c in match.group(3).split("|")]
        for (model, tp), cell in zip(SATURATION_SETUPS, cells, strict=True):
            if cell.isdigit():
                rows.append((int(match.group(1)), int(match.group(2)), model, tp, int(cell)))
    return rows


def test_the_calibration_table_is_read_whole() -> None:
    assert len(saturation_rows()) == 25


def test_saturation_throughput_lands_within_20_percent_of_every_h100_row() -> None:
    misses = []
    for isl, osl, model, tp, published in saturation_rows():
        # trtllm-bench's setup: FP8 checkpoints, kv_cache_free_gpu_mem_fraction 0.95, large batches.
        replica = ReplicaModel.for_profiles(model, "H100-SXM", precision="fp8", tp=tp, max_batch_size=2048,
                                            max_num_tokens=8192, kv_cache_fraction=0.95)
        predicted = replica.saturation_throughput(isl, osl)
        if abs(predicted / published - 1) > 0.20:
            misses.append(f"{model} TP{tp} {isl}/{osl}: {predicted:.0f} vs {published}")
    assert misses == []


@pytest.mark.parametrize(("tp", "prompt", "published_ms"), [
    (2, 512, 83.8), (2, 2048, 310), (2, 8192, 1340), (4, 512, 59.6), (4, 2048, 201), (8, 2048, 137)])
def test_prefill_times_of_llama2_70b_land_within_20_percent(tp: int, prompt: int, published_ms: float) -> None:
    replica = ReplicaModel(LLAMA2_70B, GPUS["H100-SXM"], precision="fp16", tp=tp)
    assert replica.prefill_seconds(prompt) * 1e3 == pytest.approx(published_ms, rel=0.20)


def test_tp2_decode_step_of_llama2_70b_lands_within_20_percent() -> None:
    # Larger batches and TP4/TP8 decode steps of that (non-TensorRT-LLM) stack are slower than this
    # model predicts: see docs/performance-model.md.
    replica = ReplicaModel(LLAMA2_70B, GPUS["H100-SXM"], precision="fp16", tp=2)
    assert replica.decode_seconds(1, 512) * 1e3 == pytest.approx(37.0, rel=0.20)


def test_decode_is_bandwidth_bound_then_compute_bound() -> None:
    replica = ReplicaModel.for_profiles("Llama-3.1-8B", "H100-SXM")
    one, sixteen, big = (replica.decode_seconds(b, 1000) for b in (1, 16, 1024))
    assert sixteen < one * 1.3, "batch 16 costs little more than batch 1: weights dominate"
    assert big > one * 3, "a very large batch is no longer free"
    # The worked number in step_seconds' docstring.
    assert one * 1e3 == pytest.approx(7.5, abs=0.1)


def test_prefill_grows_linearly_then_quadratically_with_the_prompt() -> None:
    replica = ReplicaModel.for_profiles("Llama-3.3-70B", "H200-SXM", tp=4)
    t1k, t2k, t8k, t16k = (replica.prefill_seconds(n) for n in (1000, 2000, 8000, 16000))
    assert 1.8 < t2k / t1k < 2.2
    assert t16k / t8k > 2.05, "attention makes long prompts superlinear"


def test_more_tensor_parallelism_speeds_up_a_step() -> None:
    steps = [ReplicaModel.for_profiles("Llama-3.3-70B", "H100-SXM", tp=tp).decode_seconds(8, 2000)
             for tp in (2, 4, 8)]
    assert steps == sorted(steps, reverse=True)


def test_kv_capacity_and_concurrency_limits() -> None:
    replica = ReplicaModel.for_profiles("Llama-3.1-8B", "H100-SXM", precision="fp8")
    # (80 - 8.03 - 4) GB x 0.9 / 65,536 B per token.
    assert replica.kv_capacity_tokens == int((85_899_345_920 - replica.model.parameters - 4e9) * 0.9 / 65536)
    assert replica.max_concurrency(128, 128) == 256  # the batch limit
    assert replica.max_concurrency(20000, 2000) == replica.kv_capacity_tokens // 22000  # the KV cache


def test_h200_beats_h100_on_a_decode_heavy_load() -> None:
    # More bandwidth per step and, with a large batch limit, a KV cache that holds more requests.
    h100 = ReplicaModel.for_profiles("Llama-3.3-70B", "H100-SXM", tp=2, max_batch_size=1024)
    h200 = ReplicaModel.for_profiles("Llama-3.3-70B", "H200-SXM", tp=2, max_batch_size=1024)
    assert h200.saturation_throughput(2000, 2000) > 1.3 * h100.saturation_throughput(2000, 2000)


def test_load_time_and_fit() -> None:
    assert engine_load_seconds(MODELS["Llama-3.3-70B"], "bf16", 4) == pytest.approx(68.5, abs=0.1)
    assert not weights_fit(MODELS["Llama-3.1-405B"], GPUS["H100-SXM"], "bf16", 8).fits
    assert weights_fit(MODELS["Llama-3.1-405B"], GPUS["H100-SXM"], "fp8", 8).fits


def test_an_empty_step_takes_no_time() -> None:
    assert ReplicaModel.for_profiles("Llama-3.1-8B", "H100-SXM").step_seconds(Step()) == 0


def test_a_fast_forwarded_decode_run_takes_exactly_the_per_step_times() -> None:
    model = ReplicaModel.for_profiles("Llama-3.3-70B", "H200-SXM", tp=4)
    ends = model.decode_run_ends(10.0, 37, 40_000, 300, horizon=1e9)
    now = 10.0
    for i, end in enumerate(ends):
        now += model.step_seconds(Step(decode_requests=37, decode_context=40_000 + i * 37))
        assert end == now
    assert len(ends) == 300
    stopped = model.decode_run_ends(10.0, 37, 40_000, 300, horizon=10.5)
    assert stopped == ends[:len(stopped)] and stopped[-1] >= 10.5 > stopped[-2]
