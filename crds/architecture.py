"""A model's architecture (``spec.model.architecture``): the shape the performance model and sizing need.

Parameter counts and KV-cache bytes are arithmetic on these fields, so any model that fits the schema can be
sized and costed; ``crds.catalogue`` names well-known ones. The arithmetic (checked against the published
sizes in ../shared/calibration/hopper-blackwell-moe.md, "Derived sizes", by tests/unit/test_architecture.py):

- Embedding and LM head: ``vocab x hidden`` each (one when tied).
- Attention (GQA): Q ``hidden x heads x head_dim``, K and V ``hidden x kv_heads x head_dim`` each, O
  ``heads x head_dim x hidden``. MLA (DeepSeek-V3/R1): Q through a ``q_lora_rank`` down-projection, one joint
  KV down-projection ``hidden x (kv_lora_rank + qk_rope_head_dim)``, an up-projection
  ``kv_lora_rank x heads x (qk_nope_head_dim + v_head_dim)``, O ``heads x v_head_dim x hidden``.
- SwiGLU FFN: ``3 x hidden x ffn``; a mixture-of-experts layer has ``routed + shared`` such FFNs of the
  expert width plus a ``hidden x routed`` router, of which ``experts_per_token + shared`` run per token.
- KV cache per token: ``2 x kv_heads x head_dim`` values per attention layer; MLA caches the compressed
  ``kv_lora_rank + qk_rope_head_dim`` (576 for DeepSeek-R1: 35,136 values over 61 layers, against 2.5 M for
  uncompressed 128-head attention: 128 x (192 + 128) x 61). A sliding-window layer holds at most ``window`` tokens.

Worked example, DeepSeek-R1: 58 MoE layers x 257 experts x 3 x 7,168 x 2,048 = 656.5 B of expert weights, +
11.4 B of MLA attention + 1.2 B of 3 dense FFNs + 1.9 B of embeddings = 671.0 B in all; per token 8 routed +
1 shared expert run, 37.6 B active.
"""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from crds.base import ApiModel


class MixtureOfExperts(ApiModel):
    """The experts of a mixture-of-experts model (Hugging Face: ``n_routed_experts``/``num_local_experts``,
    ``num_experts_per_tok``, ``n_shared_experts``, ``moe_intermediate_size``)."""

    routed_experts: int = Field(ge=2, le=1024, description="Routed experts per MoE layer.")
    experts_per_token: int = Field(ge=1, le=64, description="Routed experts each token runs.")
    shared_experts: int = Field(0, ge=0, le=16, description="Experts every token runs as well.")
    expert_ffn_size: int = Field(ge=1, description="Intermediate size of one expert's SwiGLU FFN.")
    dense_layers: int = Field(0, ge=0, description="Layers with a dense FFN (of `ffnSize`) instead of "
                              "experts: DeepSeek-R1's first 3, every second layer of Llama-4-Maverick.")


class MultiHeadLatentAttention(ApiModel):
    """DeepSeek's MLA: keys and values cached as one compressed latent per token and layer."""

    kv_lora_rank: int = Field(ge=1, description="Width of the cached KV latent (DeepSeek-R1: 512).")
    qk_rope_head_dim: int = Field(ge=0, description="Rotary part of each query/key head, cached beside "
                                  "the latent (DeepSeek-R1: 64).")
    qk_nope_head_dim: int = Field(ge=1, description="Non-rotary part of each query/key head (128).")
    v_head_dim: int = Field(ge=1, description="Value head width (128).")
    q_lora_rank: int = Field(0, ge=0, description="Width of the query down-projection; 0: none.")

    @property
    def cached_values(self) -> int:
        return self.kv_lora_rank + self.qk_rope_head_dim


class SlidingWindow(ApiModel):
    """Layers that attend only to the last ``window`` tokens (gpt-oss's alternate layers; Llama-4's chunked
    attention costed as a window of the chunk size)."""

    window: int = Field(ge=1, description="Tokens a sliding-window layer attends to and caches.")
    layers: int = Field(ge=1, description="How many of the attention layers use the window.")


class BlockGroup(ApiModel):
    """Blocks of a heterogeneous model (Llama-Nemotron's per-block NAS), counted by shape."""

    count: int = Field(ge=1, description="Blocks of this shape.")
    attention: bool = Field(True, description="Whether these blocks have attention (`kvHeads` KV heads).")
    ffn_size: int = Field(ge=0, description="Intermediate size of these blocks' SwiGLU FFN; 0: none.")


class Architecture(ApiModel):
    """The shape of a decoder-only transformer, as its Hugging Face `config.json` gives it."""

    layers: int = Field(ge=1, le=1024, description="Decoder layers (`num_hidden_layers`).")
    hidden_size: int = Field(ge=64, description="Model width (`hidden_size`).")
    attention_heads: int = Field(ge=1, description="Query heads (`num_attention_heads`).")
    kv_heads: int = Field(ge=1, description="Key/value heads (`num_key_value_heads`; GQA when fewer than "
                          "the query heads).")
    head_dim: int = Field(ge=8, description="Width of one attention head (`head_dim`, else hidden / heads).")
    ffn_size: int = Field(ge=0, description="Intermediate size of a dense layer's SwiGLU FFN "
                          "(`intermediate_size`).")
    vocab_size: int = Field(ge=1, description="Vocabulary (`vocab_size`).")
    tied_embeddings: bool = Field(False, description="The LM head shares the embedding's weights.")
    context_length: int = Field(131_072, ge=128, description="Longest sequence (`max_position_embeddings`).")
    moe: MixtureOfExperts | None = Field(None, description="Mixture-of-experts layers; unset: dense.")
    mla: MultiHeadLatentAttention | None = Field(None, description="Multi-head latent attention; unset: GQA.")
    sliding_window: SlidingWindow | None = Field(None, description="Sliding-window attention layers.")
    # A tuple, so an architecture (and the ReplicaModel holding it) is hashable: the oracle caches by model.
    blocks: tuple[BlockGroup, ...] | None = Field(None, max_length=64, description="Heterogeneous blocks, by shape; "
                                            "their counts add up to `layers`. Unset: every layer alike.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.blocks is not None and sum(b.count for b in self.blocks) != self.layers:
            raise ValueError(f"architecture.blocks count {sum(b.count for b in self.blocks)} blocks, "
                             f"but architecture.layers is {self.layers}")
        if self.attention_heads % self.kv_heads:
            raise ValueError(f"architecture.attentionHeads ({self.attention_heads}) must be a multiple of "
                             f"architecture.kvHeads ({self.kv_heads}): each KV head serves a whole group of "
                             "query heads")
        if self.moe is not None and self.moe.experts_per_token > self.moe.routed_experts:
            raise ValueError("architecture.moe.expertsPerToken must not exceed routedExperts")
        if self.moe is not None and self.moe.dense_layers > self.layers:
            raise ValueError("architecture.moe.denseLayers must not exceed architecture.layers")
        if self.sliding_window is not None and self.sliding_window.layers > self.attention_layers:
            raise ValueError("architecture.slidingWindow.layers must not exceed the attention layers")
        return self

    # --- counts ---------------------------------------------------------------------------------------
    @property
    def attention_layers(self) -> int:
        if self.blocks is None:
            return self.layers
        return sum(b.count for b in self.blocks if b.attention)

    @property
    def moe_layers(self) -> int:
        return 0 if self.moe is None else self.layers - self.moe.dense_layers

    def _attention_parameters(self) -> int:
        h = self.hidden_size
        if self.mla is not None:
            m = self.mla
            q_width = self.attention_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim)
            q = h * m.q_lora_rank + m.q_lora_rank * q_width if m.q_lora_rank else h * q_width
            kv = h * m.cached_values + m.kv_lora_rank * self.attention_heads * (m.qk_nope_head_dim + m.v_head_dim)
            return q + kv + self.attention_heads * m.v_head_dim * h
        q = self.attention_heads * self.head_dim
        return 2 * h * q + 2 * h * self.kv_heads * self.head_dim

    def _ffn_parameters(self, ffn: int) -> int:
        return 3 * self.hidden_size * ffn

    def _layer_parameters(self, active: bool) -> int:
        """Attention and FFN weights of every layer: all of them, or those one token runs."""
        attention = self.attention_layers * self._attention_parameters()
        if self.blocks is not None:
            return attention + sum(b.count * self._ffn_parameters(b.ffn_size) for b in self.blocks)
        if self.moe is None:
            return attention + self.layers * self._ffn_parameters(self.ffn_size)
        moe = self.moe
        experts = (moe.experts_per_token if active else moe.routed_experts) + moe.shared_experts
        per_moe_layer = experts * self._ffn_parameters(moe.expert_ffn_size) + self.hidden_size * moe.routed_experts
        return attention + moe.dense_layers * self._ffn_parameters(self.ffn_size) + self.moe_layers * per_moe_layer

    @property
    def embedding_parameters(self) -> int:
        """Input embedding and LM head (one matrix when tied)."""
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    @property
    def total_parameters(self) -> int:
        """Every weight: what HBM holds (norms, biases and gpt-oss's attention sinks, under 0.1%, left out)."""
        return self._layer_parameters(active=False) + self.embedding_parameters

    @property
    def active_parameters(self) -> int:
        """Weights one token runs through, embeddings included (the figure model cards publish)."""
        return self._layer_parameters(active=True) + self.embedding_parameters

    @property
    def compute_parameters(self) -> int:
        """Weights a token multiplies (2 FLOPs each): the active ones less the input embedding, a lookup. A tied
        matrix is still the LM head's, which multiplies: only an untied model has a second copy to leave out."""
        return self.active_parameters - (0 if self.tied_embeddings else self.vocab_size * self.hidden_size)

    @property
    def expert_parameters(self) -> int:
        """Routed-expert weights of all layers (what expert parallelism spreads over its ranks)."""
        if self.moe is None:
            return 0
        return self.moe_layers * self.moe.routed_experts * self._ffn_parameters(self.moe.expert_ffn_size)

    @property
    def kv_values_per_layer(self) -> int:
        """K and V values one token caches in one attention layer."""
        if self.mla is not None:
            return self.mla.cached_values
        return 2 * self.kv_heads * self.head_dim

    def kv_values_per_token(self, context: int | None = None) -> float:
        """KV values per token of a sequence of ``context`` tokens, over all attention layers; a sliding-window
        layer caches at most ``window`` of them, so its share per token falls with the context. ``None``: the
        full-attention layers only (the long-context limit). gpt-oss-120b: 18 full layers x 2 x 8 x 64 = 18,432
        values per token at long context, twice that at 128 tokens or fewer."""
        full = self.attention_layers - (self.sliding_window.layers if self.sliding_window else 0)
        values = float(full * self.kv_values_per_layer)
        if self.sliding_window is not None and context is not None and context > 0:
            held = min(context, self.sliding_window.window) / context
            values += self.sliding_window.layers * self.kv_values_per_layer * held
        return values
