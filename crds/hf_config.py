"""A Hugging Face ``config.json`` as an ``Architecture`` (``spec.model.architecture``): what
``tokenworks model from-config`` prints.

The converter reads the fields the model's Hugging Face configuration class defines, with the same defaults
(``huggingface/transformers@008e5743``, ``src/transformers/models/<type>/configuration_<type>.py``), and picks the
family by ``model_type``, else by ``architectures``. Common to every family: ``num_hidden_layers``, ``hidden_size``,
``num_attention_heads``, ``num_key_value_heads`` (default: the heads), ``head_dim`` (default: hidden / heads),
``intermediate_size``, ``vocab_size``, ``tie_word_embeddings`` (default false, as every family here sets it) and
``max_position_embeddings`` (``contextLength``). Per family:

- ``llama``, ``mistral``, ``qwen2``, ``qwen3``: dense. Mistral's ``sliding_window`` covers every layer; Qwen's only
  when ``use_sliding_window``, from layer ``max_window_layers`` on; an explicit ``layer_types`` list wins.
- ``mixtral``: ``num_local_experts`` experts of ``intermediate_size``, ``num_experts_per_tok``, every layer.
- ``qwen3_moe``: ``num_experts`` of ``moe_intermediate_size``; layer ``i`` is sparse unless it is in
  ``mlp_only_layers`` or ``(i + 1) % decoder_sparse_step != 0`` (then a dense FFN of ``intermediate_size``).
- ``deepseek_v3``: MLA (``kv_lora_rank``, ``q_lora_rank``, ``qk_rope_head_dim``, ``qk_nope_head_dim``,
  ``v_head_dim``) and ``n_routed_experts`` + ``n_shared_experts`` of ``moe_intermediate_size``; layer ``i`` is MoE when
  ``i >= first_k_dense_replace and i % moe_layer_freq == 0`` (DeepSeek's ``modeling_deepseek.py``).
  ``num_nextn_predict_layers`` (the multi-token-prediction module) is not a decoder layer and is left out, as
  the published 671 B is. MLA has no single head width: ``headDim`` is ``v_head_dim``, as the catalogue holds it.
- ``llama4`` (its ``text_config``; ``llama4_text`` at the top level too): ``num_local_experts`` experts of
  ``intermediate_size`` plus one shared expert, on ``moe_layers`` (default every ``interleave_moe_layer_step``-th
  layer); dense layers have ``intermediate_size_mlp``. Chunked attention (``attention_chunk_size``) on the layers
  ``no_rope_layers`` marks 1 (default: all but every ``no_rope_layer_interval``-th, 36 of 48) is held as a sliding
  window of the chunk size, as ``crds.catalogue`` explains.
- ``gpt_oss``: ``num_local_experts`` of ``intermediate_size``, ``experts_per_token`` (or ``num_experts_per_tok``),
  no dense FFN; ``sliding_window`` on the ``layer_types`` marked ``sliding_attention`` (default: every other
  layer, from the first).
- ``nemotron-nas`` (``DeciLMForCausalLM``): ``block_configs``, one per layer. A block whose ``attention.no_op`` or
  ``attention.replace_with_linear`` is set caches no KV; the others have ``num_attention_heads / n_heads_in_group``
  KV heads (one value for all of them). ``ffn.ffn_mult`` gives the block's FFN width by
  ``crds.catalogue.decilm_ffn_size``; ``ffn.no_op`` none. Blocks are grouped by shape.

Fields that change the shape but that the converter cannot express are left out and named in
``Conversion.notes`` (the CLI prints them as comments): the ``hidden x hidden`` weights of DeciLM's
``replace_with_linear`` blocks, DeciLM's per-block ``window_length``, a ``vision_config``, the MTP layers, and
biases (``attention_bias``, ``mlp_bias``: under 0.1% of the weights). ``quantization_config`` describes the
checkpoint, not the shape: the precision is ``spec.engine.precision``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from crds.architecture import Architecture, BlockGroup, MixtureOfExperts, MultiHeadLatentAttention, SlidingWindow
from crds.catalogue import decilm_ffn_size


class ConfigError(ValueError):
    """A config.json that cannot be read as an Architecture; the message says why, in one line."""


@dataclass(frozen=True)
class Conversion:
    """The architecture, and what of the config it leaves out (one sentence each)."""

    architecture: Architecture
    notes: tuple[str, ...] = ()


@dataclass
class _Reader:
    """Field access that names the config in every error and collects every missing field at once."""

    config: Mapping[str, Any]
    model_type: str
    notes: list[str] = field(default_factory=list)

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"config.json (model_type {self.model_type!r}): {message}")

    def require(self, *names: str) -> None:
        missing = [n for n in names if self.config.get(n) is None]
        if missing:
            raise self.error(f"missing {', '.join(missing)}")

    def integer(self, name: str, default: int | None = None) -> int:
        value = self.config.get(name)
        if value is None:
            if default is None:
                raise self.error(f"missing {name}")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{name} must be an integer, not {value!r}")
        return value

    def flag(self, name: str, default: bool = False) -> bool:
        value = self.config.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(f"{name} must be true or false, not {value!r}")
        return value

    def int_list(self, name: str) -> list[int] | None:
        value = self.config.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise self.error(f"{name} must be a list of integers, not {value!r}")
        return value

    def str_list(self, name: str) -> list[str] | None:
        value = self.config.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(f"{name} must be a list of strings, not {value!r}")
        return value

    def common(self, *also: str) -> dict[str, Any]:
        """The fields every decoder has; ``also`` are the family's own required fields, checked in one go."""
        self.require("num_hidden_layers", "hidden_size", "num_attention_heads", "vocab_size", *also)
        heads = self.integer("num_attention_heads")
        hidden = self.integer("hidden_size")
        if self.flag("attention_bias") or self.flag("mlp_bias"):
            self.notes.append("attention_bias / mlp_bias: biases are left out of the parameter count (under 0.1%)")
        shape: dict[str, Any] = {
            "layers": self.integer("num_hidden_layers"), "hidden_size": hidden, "attention_heads": heads,
            "kv_heads": self.integer("num_key_value_heads", heads),
            "head_dim": self.integer("head_dim", hidden // heads if heads else 0),
            "vocab_size": self.integer("vocab_size"), "tied_embeddings": self.flag("tie_word_embeddings"),
        }
        if self.config.get("max_position_embeddings") is not None:
            shape["context_length"] = self.integer("max_position_embeddings")
        return shape

    def windowed_layers(self, layers: int, windowed: set[str], default: list[str]) -> int:
        """How many layers ``layer_types`` (else ``default``) marks with one of ``windowed``."""
        types = self.str_list("layer_types") or default
        if len(types) != layers:
            raise self.error(f"layer_types has {len(types)} entries, but num_hidden_layers is {layers}")
        return sum(t in windowed for t in types)


def _window(layers: int, window: int | None) -> SlidingWindow | None:
    return SlidingWindow(window=window, layers=layers) if window and layers else None


def _dense(r: _Reader) -> Architecture:
    shape = r.common("intermediate_size")
    layers = shape["layers"]
    window = r.integer("sliding_window", 0) or None
    if r.model_type == "mistral":
        sliding = ["sliding_attention"] * layers if window else ["full_attention"] * layers
    elif r.model_type in ("qwen2", "qwen3"):
        # Qwen's rule (configuration_qwen2.py / _qwen3.py): the window only with use_sliding_window, and only
        # from layer max_window_layers on.
        if not r.flag("use_sliding_window"):
            window = None
        start = r.integer("max_window_layers", layers)
        sliding = ["sliding_attention" if window and i >= start else "full_attention" for i in range(layers)]
    else:
        sliding = ["full_attention"] * layers
        if window:
            r.notes.append(f"sliding_window {window}: model_type {r.model_type!r} does not use it; left out")
            window = None
    windowed = r.windowed_layers(layers, {"sliding_attention"}, sliding)
    return Architecture(**shape, ffn_size=r.integer("intermediate_size"), sliding_window=_window(windowed, window))


def _mixtral(r: _Reader) -> Architecture:
    shape = r.common("intermediate_size", "num_local_experts", "num_experts_per_tok")
    window = r.integer("sliding_window", 0) or None
    windowed = r.windowed_layers(shape["layers"], {"sliding_attention"},
                                 ["sliding_attention" if window else "full_attention"] * shape["layers"])
    moe = MixtureOfExperts(routed_experts=r.integer("num_local_experts"),
                           experts_per_token=r.integer("num_experts_per_tok"),
                           expert_ffn_size=r.integer("intermediate_size"))
    return Architecture(**shape, ffn_size=0, moe=moe, sliding_window=_window(windowed, window))


def _qwen3_moe(r: _Reader) -> Architecture:
    shape = r.common("intermediate_size", "num_experts", "num_experts_per_tok", "moe_intermediate_size")
    layers, experts = shape["layers"], r.integer("num_experts")
    step = r.integer("decoder_sparse_step", 1)
    dense_only = set(r.int_list("mlp_only_layers") or [])
    # modeling_qwen3_moe.py: a layer is sparse unless listed in mlp_only_layers or off the decoder_sparse_step.
    sparse = sum(1 for i in range(layers) if i not in dense_only and experts > 0 and (i + 1) % step == 0)
    window = r.integer("sliding_window", 0) if r.flag("use_sliding_window") else 0
    start = r.integer("max_window_layers", layers)
    windowed = r.windowed_layers(layers, {"sliding_attention"},
                                 ["sliding_attention" if window and i >= start else "full_attention"
                                  for i in range(layers)])
    moe = None if sparse == 0 else MixtureOfExperts(
        routed_experts=experts, experts_per_token=r.integer("num_experts_per_tok"),
        expert_ffn_size=r.integer("moe_intermediate_size"), dense_layers=layers - sparse)
    return Architecture(**shape, ffn_size=r.integer("intermediate_size"), moe=moe,
                        sliding_window=_window(windowed, window or None))


def _deepseek_v3(r: _Reader) -> Architecture:
    shape = r.common("intermediate_size", "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim",
                     "n_routed_experts", "num_experts_per_tok", "moe_intermediate_size")
    layers = shape["layers"]
    first_dense, freq = r.integer("first_k_dense_replace", 0), r.integer("moe_layer_freq", 1)
    if freq < 1:
        raise r.error(f"moe_layer_freq must be at least 1, not {freq}")
    sparse = sum(1 for i in range(layers) if i >= first_dense and i % freq == 0)
    mtp = r.integer("num_nextn_predict_layers", 0)
    if mtp:
        r.notes.append(f"num_nextn_predict_layers {mtp}: the multi-token-prediction layer is not a decoder layer "
                       "and is left out (as the published parameter totals leave it out)")
    shape["head_dim"] = r.integer("v_head_dim")
    mla = MultiHeadLatentAttention(kv_lora_rank=r.integer("kv_lora_rank"),
                                   qk_rope_head_dim=r.integer("qk_rope_head_dim"),
                                   qk_nope_head_dim=r.integer("qk_nope_head_dim"), v_head_dim=r.integer("v_head_dim"),
                                   q_lora_rank=r.integer("q_lora_rank", 0))
    moe = None if sparse == 0 else MixtureOfExperts(
        routed_experts=r.integer("n_routed_experts"), experts_per_token=r.integer("num_experts_per_tok"),
        shared_experts=r.integer("n_shared_experts", 0), expert_ffn_size=r.integer("moe_intermediate_size"),
        dense_layers=layers - sparse)
    return Architecture(**shape, ffn_size=r.integer("intermediate_size"), moe=moe, mla=mla)


def _llama4(r: _Reader) -> Architecture:
    shape = r.common("intermediate_size", "intermediate_size_mlp", "num_local_experts", "num_experts_per_tok")
    layers = shape["layers"]
    step = r.integer("interleave_moe_layer_step", 1)
    if step < 1:
        raise r.error(f"interleave_moe_layer_step must be at least 1, not {step}")
    moe_layers = r.int_list("moe_layers")
    sparse = len(set(moe_layers)) if moe_layers is not None else len(range(step - 1, layers, step))
    # configuration_llama4.py: no_rope_layers[i] == 1 marks a RoPE layer, which attends in chunks; the NoPE
    # layers (every no_rope_layer_interval-th) attend globally.
    interval = r.integer("no_rope_layer_interval", 4)
    rope = r.int_list("no_rope_layers") or [int((i + 1) % interval != 0) for i in range(layers)]
    chunk = r.integer("attention_chunk_size", 0) or None
    windowed = r.windowed_layers(layers, {"chunked_attention"},
                                 ["chunked_attention" if flag and chunk else "full_attention" for flag in rope])
    if chunk and windowed:
        r.notes.append(f"attention_chunk_size {chunk}: chunked attention on {windowed} layers is held as a sliding "
                       "window of the chunk size (the same KV bound)")
    moe = None if sparse == 0 else MixtureOfExperts(
        routed_experts=r.integer("num_local_experts"), experts_per_token=r.integer("num_experts_per_tok"),
        shared_experts=1, expert_ffn_size=r.integer("intermediate_size"), dense_layers=layers - sparse)
    return Architecture(**shape, ffn_size=r.integer("intermediate_size_mlp"), moe=moe,
                        sliding_window=_window(windowed, chunk))


def _gpt_oss(r: _Reader) -> Architecture:
    shape = r.common("intermediate_size", "num_local_experts")
    if r.config.get("experts_per_token") is None and r.config.get("num_experts_per_tok") is None:
        raise r.error("missing experts_per_token (or num_experts_per_tok)")
    per_token = r.integer("experts_per_token") if r.config.get("experts_per_token") is not None \
        else r.integer("num_experts_per_tok")
    layers = shape["layers"]
    window = r.integer("sliding_window", 0) or None
    # configuration_gpt_oss.py's default: sliding, full, sliding, ... from layer 0.
    windowed = r.windowed_layers(layers, {"sliding_attention"},
                                 ["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(layers)])
    moe = MixtureOfExperts(routed_experts=r.integer("num_local_experts"), experts_per_token=per_token,
                           expert_ffn_size=r.integer("intermediate_size"))
    return Architecture(**shape, ffn_size=0, moe=moe, sliding_window=_window(windowed, window))


def _decilm(r: _Reader) -> Architecture:
    shape = r.common("block_configs")
    blocks = r.config["block_configs"]
    hidden, heads, layers = shape["hidden_size"], shape["attention_heads"], shape["layers"]
    if not isinstance(blocks, list) or len(blocks) != layers:
        raise r.error(f"block_configs must be a list of num_hidden_layers ({layers}) blocks")
    groups: dict[tuple[bool, int], int] = {}
    kv_heads: set[int] = set()
    linear = windowed = 0
    for i, block in enumerate(blocks):
        attention = block.get("attention") if isinstance(block, dict) else None
        ffn = block.get("ffn") if isinstance(block, dict) else None
        if not isinstance(attention, dict) or not isinstance(ffn, dict):
            raise r.error(f"block_configs[{i}] must have an attention and an ffn mapping")
        has_attention = not (attention.get("no_op") or attention.get("replace_with_linear"))
        linear += bool(attention.get("replace_with_linear")) + bool(ffn.get("replace_with_linear"))
        if has_attention:
            group = attention.get("n_heads_in_group")
            if not isinstance(group, int) or group < 1 or heads % group:
                raise r.error(f"block_configs[{i}].attention.n_heads_in_group must divide num_attention_heads "
                              f"({heads}), not {group!r}")
            kv_heads.add(heads // group)
            windowed += attention.get("window_length") is not None
        if ffn.get("no_op") or ffn.get("replace_with_linear"):
            width = 0
        else:
            mult = ffn.get("ffn_mult")
            if isinstance(mult, bool) or not isinstance(mult, int | float):
                raise r.error(f"missing block_configs[{i}].ffn.ffn_mult")
            width = decilm_ffn_size(float(mult), hidden)
        groups[(has_attention, width)] = groups.get((has_attention, width), 0) + 1
    if len(kv_heads) > 1:
        raise r.error(f"the attention blocks have different KV heads ({', '.join(map(str, sorted(kv_heads)))}), but "
                      "architecture.kvHeads is one number")
    if linear:
        r.notes.append(f"{linear} replace_with_linear sub-blocks: their hidden x hidden weights "
                       f"({hidden * hidden / 1e9:.2f} B each) are left out; they cache no KV")
    if windowed:
        r.notes.append(f"{windowed} blocks set attention.window_length: left out, their KV is counted in full")
    shape.pop("kv_heads")
    return Architecture(**shape, kv_heads=kv_heads.pop() if kv_heads else heads, ffn_size=0,
                        blocks=tuple(BlockGroup(count=n, attention=a, ffn_size=w) for (a, w), n in groups.items()))


FAMILIES: dict[str, Callable[[_Reader], Architecture]] = {
    "llama": _dense, "mistral": _dense, "qwen2": _dense, "qwen3": _dense, "mixtral": _mixtral,
    "qwen3_moe": _qwen3_moe, "deepseek_v3": _deepseek_v3, "llama4": _llama4, "llama4_text": _llama4,
    "gpt_oss": _gpt_oss, "nemotron-nas": _decilm,
}
# `architectures` names, for a config without a (known) model_type.
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3", "MixtralForCausalLM": "mixtral", "Qwen3MoeForCausalLM": "qwen3_moe",
    "DeepseekV3ForCausalLM": "deepseek_v3", "Llama4ForConditionalGeneration": "llama4",
    "Llama4ForCausalLM": "llama4_text", "GptOssForCausalLM": "gpt_oss", "DeciLMForCausalLM": "nemotron-nas",
}
KNOWN_MODEL_TYPES: tuple[str, ...] = tuple(FAMILIES)


def _family(config: Mapping[str, Any]) -> str:
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in FAMILIES:
        return model_type
    names = config.get("architectures")
    for name in names if isinstance(names, list) else []:
        if isinstance(name, str) and name in ARCHITECTURES:
            return ARCHITECTURES[name]
    what = f"model_type {model_type!r}" if model_type is not None else "no model_type"
    if isinstance(names, list) and names:
        what += f", architectures {', '.join(map(str, names))}"
    raise ConfigError(f"config.json ({what}): unknown architecture; known model types: "
                      f"{', '.join(KNOWN_MODEL_TYPES)} (or describe the model by hand under spec.model.architecture)")


def convert(config: Mapping[str, Any]) -> Conversion:
    """The architecture a Hugging Face ``config.json`` (parsed) describes, and the notes on what it leaves out.
    Raises ``ConfigError`` naming the missing or invalid fields, or the known model types."""
    if not isinstance(config, Mapping):
        raise ConfigError("config.json must be a JSON object")
    family = _family(config)
    top = config
    if family == "llama4":
        text = config.get("text_config")
        if not isinstance(text, Mapping):
            raise ConfigError("config.json (model_type 'llama4'): missing text_config")
        config = text
    reader = _Reader(config, family)
    if top.get("vision_config") is not None:
        reader.notes.append("vision_config: the vision encoder is left out (text decoder only)")
    if top.get("quantization_config") is not None:
        method = top["quantization_config"].get("quant_method") if isinstance(top["quantization_config"], dict) \
            else None
        reader.notes.append(f"quantization_config ({method or 'set'}) describes the checkpoint, not the shape: set "
                            "spec.engine.precision to match")
    try:
        architecture = FAMILIES[family](reader)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'architecture'}: {e['msg']}" for e in error.errors())
        raise reader.error(f"not a valid architecture: {problems}") from None
    return Conversion(architecture, tuple(reader.notes))


def architecture_from_config(config: Mapping[str, Any]) -> Architecture:
    """``spec.model.architecture`` from a Hugging Face ``config.json`` (parsed); see ``convert``."""
    return convert(config).architecture
