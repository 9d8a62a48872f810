"""Well-known models by name (``spec.model.profile``): each is just an ``Architecture``, as its published
``config.json`` gives it (``tokenworks model from-config`` reads one the same way).

Shapes from ../shared/calibration/hopper-blackwell-moe.md, "Model shapes", which cites the configs as mirrored
in ``ai-dynamo/aiconfigurator@095f58a5`` (``aic-core/src/aiconfigurator_core/model_configs/``) and, for the
Llama-Nemotron blocks, ``NVIDIA/NeMo@8cfedd72`` (``nemo/collections/llm/gpt/model/llama_nemotron_config.py``).
Llama-2-70B (the Splitwise and MLPerf rows) from its published config (``meta-llama/Llama-2-70b-hf``).

Two shapes are costed, not copied:
- Llama-4's chunked attention (chunks of 8,192 tokens on 3 of every 4 layers) is held as a sliding window of
  8,192 on 36 of its 48 layers: the same KV bound, and the same cost to within a chunk's average.
- Llama-Nemotron's blocks are grouped by shape; which attention block carries which FFN width is not kept
  (sizes and costs are sums over blocks, so the pairing does not change them). A block's FFN width is DeciLM's
  rule ``ceil(int(2 x ffn_mult x hidden / 3) / 256) x 256``.
"""

from __future__ import annotations

import math

from crds.architecture import Architecture, BlockGroup, MixtureOfExperts, MultiHeadLatentAttention, SlidingWindow


def decilm_ffn_size(ffn_mult: float, hidden_size: int) -> int:
    """DeciLM's ``_ffn_mult_to_intermediate_size``: 5.25 x 8,192 gives 28,672."""
    return math.ceil(int(2 * ffn_mult * hidden_size / 3) / 256) * 256


def _nemotron(hidden: int, attention_blocks: int, ffn_mults: list[tuple[float, int]], empty: int,
              attention_with_ffn: bool) -> tuple[BlockGroup, ...]:
    groups = [BlockGroup(count=n, attention=attention_with_ffn and i == 0, ffn_size=decilm_ffn_size(m, hidden))
              for i, (m, n) in enumerate(ffn_mults)]
    if not attention_with_ffn:
        groups.insert(0, BlockGroup(count=attention_blocks, attention=True, ffn_size=0))
    if empty:
        groups.append(BlockGroup(count=empty, attention=False, ffn_size=0))
    return tuple(groups)


LLAMA_VOCAB = 128_256

CATALOGUE: dict[str, Architecture] = {
    "Llama-3.1-8B": Architecture(layers=32, hidden_size=4096, attention_heads=32, kv_heads=8, head_dim=128,
                                 ffn_size=14_336, vocab_size=LLAMA_VOCAB),
    "Llama-3.3-70B": Architecture(layers=80, hidden_size=8192, attention_heads=64, kv_heads=8, head_dim=128,
                                  ffn_size=28_672, vocab_size=LLAMA_VOCAB),
    "Llama-3.1-405B": Architecture(layers=126, hidden_size=16_384, attention_heads=128, kv_heads=8, head_dim=128,
                                   ffn_size=53_248, vocab_size=LLAMA_VOCAB),
    "Llama-2-70B": Architecture(layers=80, hidden_size=8192, attention_heads=64, kv_heads=8, head_dim=128,
                                ffn_size=28_672, vocab_size=32_000, context_length=4096),
    "DeepSeek-R1": Architecture(
        layers=61, hidden_size=7168, attention_heads=128, kv_heads=128, head_dim=128, ffn_size=18_432,
        vocab_size=129_280, context_length=163_840,
        moe=MixtureOfExperts(routed_experts=256, experts_per_token=8, shared_experts=1, expert_ffn_size=2048,
                             dense_layers=3),
        mla=MultiHeadLatentAttention(kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128,
                                     q_lora_rank=1536)),
    "Qwen3-235B-A22B": Architecture(
        layers=94, hidden_size=4096, attention_heads=64, kv_heads=4, head_dim=128, ffn_size=12_288,
        vocab_size=151_936, context_length=40_960,
        moe=MixtureOfExperts(routed_experts=128, experts_per_token=8, expert_ffn_size=1536)),
    "Qwen3-30B-A3B": Architecture(
        layers=48, hidden_size=2048, attention_heads=32, kv_heads=4, head_dim=128, ffn_size=6144,
        vocab_size=151_936, context_length=40_960,
        moe=MixtureOfExperts(routed_experts=128, experts_per_token=8, expert_ffn_size=768)),
    "Llama-4-Maverick-17B-128E": Architecture(
        layers=48, hidden_size=5120, attention_heads=40, kv_heads=8, head_dim=128, ffn_size=16_384,
        vocab_size=202_048, context_length=1_048_576,
        moe=MixtureOfExperts(routed_experts=128, experts_per_token=1, shared_experts=1, expert_ffn_size=8192,
                             dense_layers=24),
        sliding_window=SlidingWindow(window=8192, layers=36)),
    "Llama-4-Scout-17B-16E": Architecture(
        layers=48, hidden_size=5120, attention_heads=40, kv_heads=8, head_dim=128, ffn_size=16_384,
        vocab_size=202_048, context_length=10_485_760,
        moe=MixtureOfExperts(routed_experts=16, experts_per_token=1, shared_experts=1, expert_ffn_size=8192),
        sliding_window=SlidingWindow(window=8192, layers=36)),
    "gpt-oss-120b": Architecture(
        layers=36, hidden_size=2880, attention_heads=64, kv_heads=8, head_dim=64, ffn_size=0,
        vocab_size=201_088,
        moe=MixtureOfExperts(routed_experts=128, experts_per_token=4, expert_ffn_size=2880),
        sliding_window=SlidingWindow(window=128, layers=18)),
    "gpt-oss-20b": Architecture(
        layers=24, hidden_size=2880, attention_heads=64, kv_heads=8, head_dim=64, ffn_size=0,
        vocab_size=201_088,
        moe=MixtureOfExperts(routed_experts=32, experts_per_token=4, expert_ffn_size=2880),
        sliding_window=SlidingWindow(window=128, layers=12)),
    "Llama-3.3-Nemotron-Super-49B": Architecture(
        layers=80, hidden_size=8192, attention_heads=64, kv_heads=8, head_dim=128, ffn_size=0,
        vocab_size=LLAMA_VOCAB,
        blocks=_nemotron(8192, 49, [(5.25, 49), (1.3125, 10), (1.0, 8), (2.625, 6), (0.5, 6), (3.28125, 1)],
                         empty=0, attention_with_ffn=True)),
    "Llama-3.1-Nemotron-Ultra-253B": Architecture(
        layers=162, hidden_size=16_384, attention_heads=128, kv_heads=8, head_dim=128, ffn_size=0,
        vocab_size=LLAMA_VOCAB,
        blocks=_nemotron(16_384, 64, [(4.875, 34), (2.4375, 19), (1.95, 10), (1.4625, 6), (3.4125, 4),
                                      (2.925, 2), (0.4875, 1), (0.975, 1), (27.5625, 1), (31.40625, 1),
                                      (36.5625, 1), (39.0, 1)], empty=17, attention_with_ffn=False)),
}

PROFILE_NAMES: tuple[str, ...] = tuple(CATALOGUE)
