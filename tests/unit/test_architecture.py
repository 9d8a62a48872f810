"""Architecture arithmetic against the published sizes, its validators, and the spec-level shape checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from crds.architecture import Architecture, BlockGroup, MixtureOfExperts, SlidingWindow
from crds.catalogue import CATALOGUE, decilm_ffn_size
from crds.gpus import FP4_PRODUCTS, GPU_PRODUCTS
from crds.models import ModelDeploymentSpec

# ../shared/calibration/hopper-blackwell-moe.md, "Model shapes" > "Derived sizes (computed from the configs)":
# total and active parameters (billions, to 0.1; None: dense, active = total) and KV values per token (exact,
# K plus V over all layers). The dense Llamas are given to the billion ("8 / 70 / 405 B"), checked to 1 B.
PUBLISHED: dict[str, tuple[float, float | None, int]] = {
    "DeepSeek-R1": (671.0, 37.6, 35_136),
    "Qwen3-235B-A22B": (235.1, 22.2, 96_256),
    "Qwen3-30B-A3B": (30.5, 3.4, 49_152),
    "Llama-4-Maverick-17B-128E": (400.7, 17.2, 98_304),
    "Llama-4-Scout-17B-16E": (107.8, 17.2, 98_304),
    "gpt-oss-120b": (116.8, 5.7, 18_432),
    "gpt-oss-20b": (20.9, 4.2, 12_288),
    "Llama-3.3-Nemotron-Super-49B": (49.9, None, 100_352),
    "Llama-3.1-Nemotron-Ultra-253B": (253.4, None, 131_072),
    "Llama-3.1-8B": (8, None, 65_536),
    "Llama-3.3-70B": (70, None, 163_840),
    "Llama-3.1-405B": (405, None, 258_048),
}
# The same table's "KV per token, FP8" column, KiB (BF16 is twice it).
PUBLISHED_FP8_KIB = {"DeepSeek-R1": 34.3, "Qwen3-235B-A22B": 94.0, "Qwen3-30B-A3B": 48.0,
                     "Llama-4-Maverick-17B-128E": 96.0, "Llama-4-Scout-17B-16E": 96.0, "gpt-oss-120b": 18.0,
                     "gpt-oss-20b": 12.0, "Llama-3.3-Nemotron-Super-49B": 98.0, "Llama-3.1-Nemotron-Ultra-253B": 128.0,
                     "Llama-3.1-8B": 64.0, "Llama-3.3-70B": 160.0, "Llama-3.1-405B": 252.0}
ROUNDED_TO_THE_BILLION = {"Llama-3.1-8B", "Llama-3.3-70B", "Llama-3.1-405B"}


def published_kv_values(name: str) -> float:
    """KV values per token as the table counts them: every layer of Llama-4 (its chunked layers hold a token
    while the context is within a chunk, 8,192), gpt-oss's full-attention layers only (its caveat)."""
    shape = CATALOGUE[name]
    if name.startswith("Llama-4"):
        assert shape.sliding_window is not None
        return shape.kv_values_per_token(shape.sliding_window.window)
    return shape.kv_values_per_token()


def test_every_catalogue_model_has_a_published_row() -> None:
    assert set(PUBLISHED) == set(CATALOGUE) - {"Llama-2-70B"}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_totals_match_the_published_sizes(name: str) -> None:
    total, active, _ = PUBLISHED[name]
    shape = CATALOGUE[name]
    tolerance = 1.0 if name in ROUNDED_TO_THE_BILLION else 0.1
    assert shape.total_parameters / 1e9 == pytest.approx(total, abs=tolerance)
    assert shape.active_parameters / 1e9 == pytest.approx(total if active is None else active, abs=tolerance)
    if active is None:
        assert shape.active_parameters == shape.total_parameters


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_kv_values_per_token_match_the_published_sizes_exactly(name: str) -> None:
    assert published_kv_values(name) == PUBLISHED[name][2]
    assert round(published_kv_values(name) / 1024, 1) == PUBLISHED_FP8_KIB[name]


def test_deepseek_r1_worked_example() -> None:
    r1 = CATALOGUE["DeepSeek-R1"]
    assert r1.moe_layers == 58 and r1.attention_layers == 61
    assert r1.kv_values_per_layer == 576 and r1.kv_values_per_token() == 61 * 576 == 35_136
    assert r1.expert_parameters == 58 * 256 * 3 * 7168 * 2048
    assert r1.expert_parameters / 1e9 == pytest.approx(653.9, abs=0.1)
    # The input embedding is a lookup, not a matmul: compute parameters leave it out.
    assert r1.compute_parameters == r1.active_parameters - 129_280 * 7168


def test_sliding_window_layers_hold_at_most_their_window() -> None:
    oss = CATALOGUE["gpt-oss-120b"]
    assert oss.kv_values_per_token(128) == 2 * 18_432
    assert oss.kv_values_per_token(1280) == pytest.approx(18_432 + 18_432 * 128 / 1280)
    assert oss.kv_values_per_token() == 18_432
    scout = CATALOGUE["Llama-4-Scout-17B-16E"]
    assert scout.kv_values_per_token() == 12 * 2 * 8 * 128


def test_tied_embeddings_count_one_matrix() -> None:
    untied = CATALOGUE["Llama-3.1-8B"]
    tied = untied.model_copy(update={"tied_embeddings": True})
    assert untied.total_parameters - tied.total_parameters == 128_256 * 4096
    # One matrix, but the LM head still multiplies by it: a token's FLOPs are the untied model's.
    assert tied.compute_parameters == untied.compute_parameters


def test_blocks_sum_their_ffns_and_attention() -> None:
    super49 = CATALOGUE["Llama-3.3-Nemotron-Super-49B"]
    assert super49.attention_layers == 49
    assert decilm_ffn_size(5.25, 8192) == 28_672 and decilm_ffn_size(1.3125, 8192) == 7168


def base(**overrides: Any) -> dict[str, Any]:
    shape: dict[str, Any] = {"layers": 4, "hidden_size": 256, "attention_heads": 8, "kv_heads": 2, "head_dim": 32,
                             "ffn_size": 512, "vocab_size": 1000}
    return shape | overrides


def test_a_valid_small_shape_counts_by_hand() -> None:
    shape = Architecture(**base())
    attention = 2 * 256 * 8 * 32 + 2 * 256 * 2 * 32
    assert shape.total_parameters == 4 * (attention + 3 * 256 * 512) + 2 * 1000 * 256
    assert shape.kv_values_per_token() == 4 * 2 * 2 * 32


@pytest.mark.parametrize(("overrides", "message"), [
    ({"blocks": [BlockGroup(count=3, ffn_size=512)]}, "blocks count 3 blocks, but architecture.layers is 4"),
    ({"attention_heads": 6, "kv_heads": 4}, r"attentionHeads \(6\) must be a multiple of architecture.kvHeads \(4\)"),
    ({"moe": MixtureOfExperts(routed_experts=4, experts_per_token=8, expert_ffn_size=64)},
     "expertsPerToken must not exceed routedExperts"),
    ({"moe": MixtureOfExperts(routed_experts=4, experts_per_token=2, expert_ffn_size=64, dense_layers=5)},
     "denseLayers must not exceed architecture.layers"),
    ({"sliding_window": SlidingWindow(window=64, layers=5)}, "slidingWindow.layers must not exceed"),
])
def test_inconsistent_shapes_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Architecture(**base(**overrides))


def spec(model: dict[str, Any], **extra: Any) -> ModelDeploymentSpec:
    document: dict[str, Any] = {"model": {"name": "m", "huggingFace": "org/m", **model},
                                "gpu": {"product": "H100-SXM"}}
    for key, value in extra.items():
        document[key] = {**document.get(key, {}), **value}
    return ModelDeploymentSpec.model_validate(document)


def test_tensor_ranks_that_do_not_divide_the_heads_are_refused() -> None:
    scout = {"profile": "Llama-4-Scout-17B-16E"}
    assert spec(scout, parallelism={"tensor": 8}).parallelism.tensor == 8
    with pytest.raises(ValidationError, match=r"must divide the model's attention heads.*: 40 heads over 16 ranks"):
        spec(scout, parallelism={"tensor": 16})
    # Attention data-parallel runs whole heads on every rank: no split to divide.
    assert spec(scout, parallelism={"tensor": 16, "attentionDataParallel": True}).parallelism.tensor == 16


def test_kv_heads_and_tensor_ranks_must_divide_one_another() -> None:
    shape = base(attention_heads=12, kv_heads=3, head_dim=32)
    with pytest.raises(ValidationError, match=r"parallelism.tensor \(4\) and the model's KV heads \(3\)"):
        spec({"architecture": shape}, parallelism={"tensor": 4})
    assert spec({"architecture": shape}, parallelism={"tensor": 1}).model.shape.kv_heads == 3


def test_fp4_off_blackwell_names_the_fp4_gpus() -> None:
    with pytest.raises(ValidationError) as refused:
        spec({"profile": "Llama-3.1-8B"}, engine={"precision": "fp4"})
    assert "needs a GPU with FP4 tensor cores" in str(refused.value)
    assert all(product in str(refused.value) for product in FP4_PRODUCTS)
    assert spec({"profile": "Llama-3.1-8B"}, engine={"precision": "fp4"},
                gpu={"product": "B200"}).engine.precision == "fp4"


def test_expert_parallelism_needs_experts_it_divides() -> None:
    with pytest.raises(ValidationError, match=r"parallelism.expert is above 1, but the model has no experts"):
        spec({"profile": "Llama-3.3-70B"}, parallelism={"tensor": 8, "expert": 2})
    twelve = base(moe={"routedExperts": 12, "expertsPerToken": 2, "expertFfnSize": 64})
    with pytest.raises(ValidationError, match=r"parallelism.expert \(8\) must divide the model's 12 routed"):
        spec({"architecture": twelve}, parallelism={"tensor": 8, "expert": 8})
    assert spec({"architecture": twelve}, parallelism={"tensor": 4, "expert": 4}).parallelism.expert == 4
    assert spec({"profile": "DeepSeek-R1"}, parallelism={"tensor": 8, "expert": 8}).parallelism.expert == 8


def test_profile_and_architecture_are_one_or_the_other() -> None:
    with pytest.raises(ValidationError, match=r"exactly one of model\.profile"):
        spec({"profile": "Llama-3.1-8B", "architecture": base()})
    with pytest.raises(ValidationError, match=r"exactly one of model\.profile"):
        spec({})
    with pytest.raises(ValidationError, match="not in the catalogue"):
        spec({"profile": "Llama-9"})


def test_the_catalogue_and_gpu_tables_of_docs_models_md_are_the_codes() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "models.md").read_text()
    rows = {cells[0]: cells for line in text.splitlines() if line.startswith("| ")
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    for name, shape in CATALOGUE.items():
        values = shape.kv_values_per_token()
        assert rows[name][4:9] == [f"{shape.total_parameters / 1e9:.1f} B", f"{shape.active_parameters / 1e9:.1f} B",
                                   f"{values:,.0f}", f"{values * 2 / 1024:.1f} KiB", f"{values / 1024:.1f} KiB"], name
    for name, gpu in GPU_PRODUCTS.items():
        assert rows[name][1:3] == [str(gpu.gpus_per_node), str(gpu.nvlink_domain)], name
        assert f"({gpu.usable_hbm_bytes:,.0f} B)" in rows[name][4], name
        assert rows[name][3] == " / ".join("—" if t is None else f"{t:,.0f}"
                                           for t in (gpu.bf16_tflops, gpu.fp8_tflops, gpu.fp4_tflops)), name


def test_an_unknown_gpu_product_is_refused_alike_in_the_api_and_in_a_scenario() -> None:
    from pydantic import ValidationError

    from controllers.factory.scenario import NodePlan
    from crds.models import GpuSpec

    for build, field in ((lambda: GpuSpec(product="H300"), "gpu.product"),
                         (lambda: NodePlan(name="n", product="H300"), "product")):
        with pytest.raises(ValidationError, match=f"{field} 'H300' is not one of H100-SXM, H200-SXM, B200"):
            build()
