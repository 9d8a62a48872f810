"""The GPU performance model: calibration against ../shared/calibration, the engine's steady state, its shape."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from bench.calibration import WITHIN, errors, load_rows, summary
from inference_pods import performance
from inference_pods.batching import closed_loop_throughput
from inference_pods.performance import ReplicaModel, Step, engine_load_seconds, weights_fit
from inference_pods.profiles import GPUS, MODELS

CALIBRATION = Path(__file__).resolve().parents[3] / "shared" / "calibration"
LLAMA2_70B = MODELS["Llama-2-70B"]


def test_the_fixture_holds_every_table() -> None:
    counts: dict[str, int] = {}
    for row in load_rows():
        counts[row.table] = counts.get(row.table, 0) + 1
    assert counts == {"readme-h100": 25, "v1.0-total": 185, "devguide-per-gpu": 113, "v0.20-tp": 132,
                      "blog-deepseek": 1}


def test_the_fixture_copies_the_readme_table_exactly() -> None:
    readme = CALIBRATION / "README.md"
    if not readme.exists():
        pytest.skip("../shared/calibration is not beside the checkout")
    setups = [("Llama-3.1-8B", 1), ("Llama-3.3-70B", 2), ("Llama-3.1-405B", 8)]
    published = {}
    for line in readme.read_text().splitlines():
        match = re.match(r"\|\s*(\d+)/(\d+)\s*\|(.*)\|\s*$", line)
        if match:
            cells = [c.strip().replace(",", "") for c in match.group(3).split("|")]
            for (model, tp), cell in zip(setups, cells, strict=True):
                if cell.isdigit():
                    published[(model, tp, int(match.group(1)), int(match.group(2)))] = float(cell)
    fixture = {(r.model, r.tp, r.isl, r.osl): r.published for r in load_rows() if r.table == "readme-h100"}
    assert fixture == published


def test_calibration_across_gpus_and_models_holds_its_level() -> None:
    # The issue's goal is >= 90% of rows within 15% and MAE < 10%; the model reaches 62% and 20%
    # (docs/performance-model.md says where it misses and why). This holds that level so a change that
    # makes the fit worse fails; raise it when the model improves.
    share, mae = summary(errors(load_rows()))
    assert share >= 0.60 and mae <= 0.21


@pytest.mark.parametrize(("table", "share_at_least", "mae_at_most"), [
    ("readme-h100", 0.60, 0.14), ("v0.20-tp", 0.77, 0.10), ("blog-deepseek", 1.0, 0.05)])
def test_calibration_per_table(table: str, share_at_least: float, mae_at_most: float) -> None:
    share, mae = summary(errors([r for r in load_rows() if r.table == table]))
    assert share >= share_at_least and mae <= mae_at_most


@pytest.mark.parametrize(("table", "model", "isl", "osl"), [
    ("readme-h100", "Llama-3.1-8B", 1000, 1000),
    ("readme-h100", "Llama-3.3-70B", 5000, 500),
    ("readme-h100", "Llama-3.1-405B", 20000, 2000),
    ("v0.20-tp", "Llama-3.3-70B", 128, 2048),
    ("blog-deepseek", "DeepSeek-R1", 1024, 2048),
])
def test_the_engine_delivers_the_calibrated_saturation_figure(table: str, model: str, isl: int, osl: int) -> None:
    row = next(r for r in load_rows() if r.table == table and r.model == model and r.isl == isl and r.osl == osl)
    replica = row.replica()
    engine = closed_loop_throughput(replica, isl, osl, 30 * replica.max_concurrency(isl, osl))
    assert replica.saturation_throughput(isl, osl) == pytest.approx(engine, rel=0.03)


@pytest.mark.parametrize(("tp", "prompt", "published_ms"), [(2, 512, 83.8), (2, 2048, 310), (4, 512, 59.6),
                                                           (4, 2048, 201)])
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
    assert one * 1e3 == pytest.approx(7.6, abs=0.1)


def test_prefill_grows_linearly_then_quadratically_with_the_prompt() -> None:
    replica = ReplicaModel.for_profiles("Llama-3.3-70B", "H200-SXM", tp=4)
    t1k, t2k, t8k, t16k = (replica.prefill_seconds(n) for n in (1000, 2000, 8000, 16000))
    assert 1.7 < t2k / t1k < 2.2, "linear, less the fixed per-step costs"
    assert t16k / t8k > 2.05, "attention makes long prompts superlinear"


def test_more_tensor_parallelism_speeds_up_a_step() -> None:
    steps = [ReplicaModel.for_profiles("Llama-3.3-70B", "H100-SXM", tp=tp).decode_seconds(8, 2000)
             for tp in (2, 4, 8)]
    assert steps == sorted(steps, reverse=True)


def test_a_mixture_of_experts_computes_its_active_weights_and_holds_all() -> None:
    deepseek = ReplicaModel.for_profiles("DeepSeek-R1", "H200-SXM", precision="fp8", tp=8, ep=8, attention_dp=True)
    # Compute from the 37.6 B active parameters: a long prefill takes well under what 671 B would.
    dense_671b = 2 * 671e9 * 8192 / (8 * 1979e12 * performance.COMPUTE_EFFICIENCY)
    assert deepseek.prefill_seconds(8192) < 0.4 * dense_671b
    # Memory from the total: experts split over the 8 ranks, the rest whole on each (attention DP).
    expert = deepseek.model.architecture.expert_parameters
    assert deepseek.weight_bytes_per_gpu == pytest.approx((671.0e9 - expert) + expert / 8, rel=0.01)
    # Batch 1 reads 8 of 256 experts per layer; batch 256 touches nearly all of them.
    assert deepseek.decode_seconds(256, 1000) > 2 * deepseek.decode_seconds(1, 1000)


def test_mla_caches_its_compressed_latent_at_the_kv_precision() -> None:
    deepseek = ReplicaModel.for_profiles("DeepSeek-R1", "H200-SXM", precision="fp8", tp=8, ep=8, attention_dp=True)
    assert deepseek.kv_dtype == "fp8"  # auto: FP8 KV for an FP8 checkpoint
    assert deepseek.kv_bytes_per_token == 61 * 576  # 34.3 KiB
    assert replace(deepseek, kv_precision="bf16").kv_bytes_per_token == 2 * 61 * 576
    assert ReplicaModel.for_profiles("Llama-3.1-8B", "H100-SXM").kv_dtype == "bf16"


def test_fp4_beats_fp8_on_b200_at_saturation() -> None:
    fp4, fp8 = (ReplicaModel.for_profiles("Llama-3.3-70B", "B200", precision=p, max_batch_size=2048)
                for p in ("fp4", "fp8"))
    assert fp4.saturation_throughput(1000, 1000) > 1.15 * fp8.saturation_throughput(1000, 1000)
    assert fp4.weight_bytes_per_gpu < 0.6 * fp8.weight_bytes_per_gpu


def test_pipeline_parallelism_adds_capacity_not_speed() -> None:
    tp2, pp2 = (ReplicaModel.for_profiles("Llama-3.3-70B", "H200-SXM", precision="fp8", tp=t, pp=p)
                for t, p in ((2, 1), (1, 2)))
    tp1 = ReplicaModel.for_profiles("Llama-3.3-70B", "H200-SXM", precision="fp8")
    for batch in (1, 64):
        assert tp2.decode_seconds(batch, 2000) < pp2.decode_seconds(batch, 2000)
    assert pp2.decode_seconds(1, 2000) >= tp1.decode_seconds(1, 2000), "one request passes both stages in turn"
    assert pp2.kv_capacity_tokens > 2 * tp1.kv_capacity_tokens
    assert pp2.saturation_throughput(1000, 1000) > 1.3 * tp1.saturation_throughput(1000, 1000)


def test_a_group_beyond_one_nvlink_domain_pays_the_network() -> None:
    spanning = ReplicaModel.for_profiles("Llama-3.1-405B", "H100-SXM", precision="fp8", tp=16)
    one_domain = replace(spanning, gpu=replace(spanning.gpu, nvlink_domain=16))
    assert spanning.decode_seconds(64, 2000) > 1.2 * one_domain.decode_seconds(64, 2000)
    # An NVL72 rack keeps 16 GB200s on NVLink.
    nvl72 = ReplicaModel.for_profiles("Llama-3.1-405B", "GB200", precision="fp8", tp=16)
    assert nvl72.decode_seconds(64, 2000) < spanning.decode_seconds(64, 2000)


def test_attention_data_parallel_limits_are_per_rank() -> None:
    dep = ReplicaModel.for_profiles("DeepSeek-R1", "H200-SXM", precision="fp8", tp=8, ep=8, attention_dp=True,
                                    max_batch_size=128, max_num_tokens=1151)
    assert (dep.batch_limit, dep.token_budget) == (1024, 9208)


def test_attention_data_parallel_kv_is_per_rank_for_one_request() -> None:
    dep = ReplicaModel.for_profiles("DeepSeek-R1", "H200-SXM", precision="fp8", tp=8, ep=8, attention_dp=True,
                                    max_num_tokens=4096, kv_cache_fraction=0.1)
    assert dep.request_kv_capacity_tokens == dep.kv_capacity_tokens // 8
    # Requests are whole on a rank: 8 ranks of 59,236 tokens each hold 8 x 5 requests of 11,000, not 43.
    assert dep.max_concurrency(10_000, 1_000) == 8 * (dep.request_kv_capacity_tokens // 11_000) == 40
    tp = replace(dep, attention_dp=False)
    assert tp.request_kv_capacity_tokens == tp.kv_capacity_tokens


def test_kv_capacity_and_concurrency_limits() -> None:
    replica = ReplicaModel.for_profiles("Llama-3.1-8B", "H100-SXM", precision="fp8")
    activations = 8192 * 4096 * 2 * performance.ACTIVATION_RESERVE_WIDTHS
    free = 85_899_345_920 - replica.model.parameters - performance.RUNTIME_RESERVED_BYTES - activations
    assert replica.kv_capacity_tokens == int(free * 0.9 / 65536)
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


def test_attention_data_parallel_weights_are_copied_in_the_fit_as_in_the_model() -> None:
    # DeepSeek-R1 BF16 on 8 x B200: split eight ways its 1,342 GB are 167.8 GB per GPU, under the 187.2 GB usable;
    # with attention DP the 34 GB of non-expert weights are whole on every rank: 197.7 GB, which does not fit.
    model, gpu = MODELS["DeepSeek-R1"], GPUS["B200"]
    split, copied = weights_fit(model, gpu, "bf16", 8), weights_fit(model, gpu, "bf16", 8, attention_dp=True)
    assert split.fits and not copied.fits
    assert copied.weight_bytes_per_gpu == pytest.approx(197.7e9, rel=1e-3)
    assert "attention DP" in copied.message
    for adp in (False, True):
        replica = ReplicaModel.for_profiles("DeepSeek-R1", "B200", tp=8, pp=2, ep=8, attention_dp=adp)
        assert weights_fit(model, gpu, "bf16", 8, 2, adp).weight_bytes_per_gpu == replica.weight_bytes_per_gpu


def test_a_tied_lm_head_is_costed_as_an_untied_one() -> None:
    # Llama-3.1-8B with its head tied to the embedding: the same layers and the same head matmul per sampled
    # token, and the same weights read (the untied model's second copy is its input embedding, a lookup).
    untied = MODELS["Llama-3.1-8B"]
    tied = replace(untied, architecture=untied.architecture.model_copy(update={"tied_embeddings": True}))
    a, b = (ReplicaModel(m, GPUS["H100-SXM"]) for m in (untied, tied))
    assert b.prefill_seconds(8192) == a.prefill_seconds(8192)
    assert b.decode_seconds(64, 2000) == a.decode_seconds(64, 2000)
    assert b.weight_bytes_per_gpu < a.weight_bytes_per_gpu  # HBM holds one matrix fewer


def test_an_empty_step_takes_no_time() -> None:
    assert ReplicaModel.for_profiles("Llama-3.1-8B", "H100-SXM").step_seconds(Step()) == 0


@pytest.mark.parametrize("model", [
    ReplicaModel.for_profiles("Llama-3.3-70B", "H200-SXM", tp=4),
    ReplicaModel.for_profiles("gpt-oss-120b", "B200", precision="fp4", tp=2, ep=2, attention_dp=True),
    ReplicaModel.for_profiles("Llama-3.3-70B", "H100-SXM", precision="fp8", tp=2, pp=2),
])
def test_a_fast_forwarded_decode_run_takes_exactly_the_per_step_times(model: ReplicaModel) -> None:
    ends = model.decode_run_ends(10.0, 37, 40_000, 300, horizon=1e9)
    now = 10.0
    for i, end in enumerate(ends):
        now += model.step_seconds(Step(decode_requests=37, decode_context=40_000 + i * 37))
        assert end == now
    assert len(ends) == 300
    stopped = model.decode_run_ends(10.0, 37, 40_000, 300, horizon=10.5)
    assert stopped == ends[:len(stopped)] and stopped[-1] >= 10.5 > stopped[-2]


def test_within_is_the_issues_band() -> None:
    assert WITHIN == 0.15
