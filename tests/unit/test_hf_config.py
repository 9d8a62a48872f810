"""Hugging Face config.json -> Architecture (crds.hf_config) and `tokenworks model from-config|list`."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from controllers.cli import ExitCode, app
from crds.architecture import Architecture
from crds.catalogue import CATALOGUE
from crds.hf_config import KNOWN_MODEL_TYPES, ConfigError, architecture_from_config, convert
from crds.models import ModelDeployment
from inference_pods.performance import ReplicaModel

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "hf-configs"
# Each fixture and the catalogue entry of its model.
CATALOGUE_OF = {
    "meta-llama--Meta-Llama-3.1-8B_config.json": "Llama-3.1-8B",
    "deepseek-ai--DeepSeek-R1_config.json": "DeepSeek-R1",
    "deepseek-ai--DeepSeek-V3_config.json": "DeepSeek-R1",
    "Qwen--Qwen3-30B-A3B_config.json": "Qwen3-30B-A3B",
    "openai--gpt-oss-20b_config.json": "gpt-oss-20b",
    "meta-llama--Llama-4-Scout-17B-16E-Instruct_config.json": "Llama-4-Scout-17B-16E",
    "nvidia--Llama-3_3-Nemotron-Super-49B-v1_config.json": "Llama-3.3-Nemotron-Super-49B",
}
runner = CliRunner()


def load(name: str) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return config


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "300"})


def test_every_fixture_is_the_copy_its_readme_records() -> None:
    recorded = dict(re.findall(r"^\| `([^`]+\.json)` \| [\d,]+ \| `([0-9a-f]{64})` \|", (FIXTURES / "README.md")
                               .read_text(), flags=re.MULTILINE))
    on_disk = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in FIXTURES.glob("*.json")}
    assert recorded == on_disk
    assert set(on_disk) == set(CATALOGUE_OF)


@pytest.mark.parametrize("fixture", [name for name, profile in CATALOGUE_OF.items() if "Nemotron" not in profile])
def test_a_published_config_converts_to_its_catalogue_entry(fixture: str) -> None:
    assert architecture_from_config(load(fixture)) == CATALOGUE[CATALOGUE_OF[fixture]]


def test_nemotron_blocks_convert_to_the_catalogue_totals_with_the_configs_pairing() -> None:
    shape = architecture_from_config(load("nvidia--Llama-3_3-Nemotron-Super-49B-v1_config.json"))
    expected = CATALOGUE["Llama-3.3-Nemotron-Super-49B"]
    assert shape.total_parameters == expected.total_parameters
    assert shape.kv_values_per_token() == expected.kv_values_per_token() == 100_352
    assert shape.attention_layers == 49 and shape.kv_heads == 8 and shape.head_dim == 128
    assert shape.blocks is not None and expected.blocks is not None

    def widths(architecture: Architecture) -> Counter[int]:
        counts: Counter[int] = Counter()
        for block in architecture.blocks or []:
            counts[block.ffn_size] += block.count
        return counts

    assert widths(shape) == widths(expected)
    # The config pairs one of its 49 attention blocks with a 2.625 FFN (14,336), which the catalogue, grouping
    # by shape, does not keep.
    assert {(b.ffn_size, b.count) for b in shape.blocks if b.attention} == {(28_672, 48), (14_336, 1)}


def test_deepseek_notes_say_what_is_left_out() -> None:
    notes = convert(load("deepseek-ai--DeepSeek-R1_config.json")).notes
    assert any(n.startswith("num_nextn_predict_layers 1") for n in notes)
    assert any("quantization_config (fp8)" in n for n in notes)
    assert convert(load("meta-llama--Meta-Llama-3.1-8B_config.json")).notes == ()


def test_the_family_comes_from_architectures_without_a_model_type() -> None:
    config = load("meta-llama--Meta-Llama-3.1-8B_config.json")
    del config["model_type"]
    assert architecture_from_config(config) == CATALOGUE["Llama-3.1-8B"]


def test_an_unknown_architecture_names_the_known_model_types() -> None:
    with pytest.raises(ConfigError) as unknown:
        architecture_from_config({"model_type": "foo", "architectures": ["FooForCausalLM"], "hidden_size": 64})
    message = str(unknown.value)
    assert "model_type 'foo', architectures FooForCausalLM): unknown architecture" in message
    assert all(t in message for t in KNOWN_MODEL_TYPES)


@pytest.mark.parametrize(("fixture", "removed", "named"), [
    ("meta-llama--Meta-Llama-3.1-8B_config.json", ["num_hidden_layers", "hidden_size"],
     "config.json (model_type 'llama'): missing num_hidden_layers, hidden_size"),
    ("deepseek-ai--DeepSeek-R1_config.json", ["kv_lora_rank", "n_routed_experts"],
     "config.json (model_type 'deepseek_v3'): missing kv_lora_rank, n_routed_experts"),
    ("Qwen--Qwen3-30B-A3B_config.json", ["moe_intermediate_size"],
     "config.json (model_type 'qwen3_moe'): missing moe_intermediate_size"),
    ("openai--gpt-oss-20b_config.json", ["experts_per_token", "num_experts_per_tok"],
     "missing experts_per_token (or num_experts_per_tok)"),
    ("nvidia--Llama-3_3-Nemotron-Super-49B-v1_config.json", ["block_configs"],
     "config.json (model_type 'nemotron-nas'): missing block_configs"),
])
def test_removed_fields_are_named(fixture: str, removed: list[str], named: str) -> None:
    config = load(fixture)
    for name in removed:
        del config[name]
    with pytest.raises(ConfigError) as missing:
        architecture_from_config(config)
    assert named in str(missing.value)


def test_llama4_reads_its_text_config() -> None:
    config = load("meta-llama--Llama-4-Scout-17B-16E-Instruct_config.json")
    del config["text_config"]["num_hidden_layers"]
    with pytest.raises(ConfigError, match=r"\(model_type 'llama4'\): missing num_hidden_layers"):
        architecture_from_config(config)
    with pytest.raises(ConfigError, match="missing text_config"):
        architecture_from_config({"model_type": "llama4"})


def test_llama4_interleaved_experts_give_maverick() -> None:
    # Scout's text config with Maverick's differences (128 experts on every second layer, 1 M context).
    config = load("meta-llama--Llama-4-Scout-17B-16E-Instruct_config.json")
    config["text_config"] |= {"num_local_experts": 128, "interleave_moe_layer_step": 2,
                              "max_position_embeddings": 1_048_576}
    assert architecture_from_config(config) == CATALOGUE["Llama-4-Maverick-17B-128E"]
    config["text_config"]["moe_layers"] = [1, 3, 5]
    moe = architecture_from_config(config).moe
    assert moe is not None and moe.dense_layers == 45


def test_wrong_types_and_impossible_shapes_are_refused() -> None:
    config = load("meta-llama--Meta-Llama-3.1-8B_config.json")
    with pytest.raises(ConfigError, match="hidden_size must be an integer, not '4096'"):
        architecture_from_config(config | {"hidden_size": "4096"})
    with pytest.raises(ConfigError, match=r"not a valid architecture: .*attentionHeads \(30\) must be a multiple"):
        architecture_from_config(config | {"num_attention_heads": 30, "head_dim": 128})
    with pytest.raises(ConfigError, match="layer_types has 2 entries, but num_hidden_layers is 24"):
        architecture_from_config(load("openai--gpt-oss-20b_config.json") | {"layer_types": ["full_attention"] * 2})


def test_qwen_sliding_window_and_dense_layers_follow_the_hugging_face_rules() -> None:
    config = load("Qwen--Qwen3-30B-A3B_config.json")
    assert architecture_from_config(config).sliding_window is None  # use_sliding_window false: off
    windowed = architecture_from_config(config | {"use_sliding_window": True, "sliding_window": 4096,
                                                  "max_window_layers": 28})
    assert windowed.sliding_window is not None and windowed.sliding_window.layers == 20
    sparse = architecture_from_config(config | {"decoder_sparse_step": 2, "mlp_only_layers": [1, 2]})
    # Sparse: layers 1, 3, 5, ..., 47 (every second) less layer 1 -> 23 of 48.
    assert sparse.moe is not None and sparse.moe.dense_layers == 48 - 23
    dense = architecture_from_config(config | {"num_experts": 0})
    assert dense.moe is None and dense.total_parameters < 4e9


def test_mistral_window_covers_every_layer_and_mixtral_has_experts() -> None:
    llama = load("meta-llama--Meta-Llama-3.1-8B_config.json")
    mistral = architecture_from_config(llama | {"model_type": "mistral", "sliding_window": 4096})
    assert mistral.sliding_window is not None and mistral.sliding_window.layers == 32
    assert mistral.kv_values_per_token(8192) == pytest.approx(65_536 / 2)
    mixtral = architecture_from_config(llama | {"model_type": "mixtral", "num_local_experts": 8,
                                                "num_experts_per_tok": 2, "sliding_window": None})
    assert mixtral.moe is not None and mixtral.ffn_size == 0
    assert mixtral.active_parameters < mixtral.total_parameters / 3


def test_decilm_linear_blocks_and_mixed_kv_heads() -> None:
    config = load("nvidia--Llama-3_3-Nemotron-Super-49B-v1_config.json")
    linear = copy.deepcopy(config)
    linear["block_configs"][0]["attention"]["replace_with_linear"] = True
    conversion = convert(linear)
    assert conversion.architecture.attention_layers == 48
    assert any("replace_with_linear" in n for n in conversion.notes)
    mixed = copy.deepcopy(config)
    mixed["block_configs"][0]["attention"]["n_heads_in_group"] = 4
    with pytest.raises(ConfigError, match=r"different KV heads \(8, 16\)"):
        architecture_from_config(mixed)


def test_from_config_prints_a_block_that_costs_the_same_as_the_profile(tmp_path: Path) -> None:
    result = cli("model", "from-config", str(FIXTURES / "meta-llama--Meta-Llama-3.1-8B_config.json"),
                 "--name", "llama-3-1-8b")
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith("# meta-llama--Meta-Llama-3.1-8B_config.json: 8.03 B parameters, 8.03 B active")
    assert "KV 65,536 values/token = 128.0 KiB in BF16, 64.0 KiB in FP8" in first
    block = yaml.safe_load(result.stdout)
    assert block["name"] == "llama-3-1-8b" and "profile" not in block
    assert "contextLength" not in block["architecture"]  # a default, left out

    example = yaml.safe_load((ROOT / "examples" / "llama-8b-h100.yaml").read_text())
    by_profile = ModelDeployment.model_validate(example)
    model = example["spec"]["model"]
    del model["profile"]
    model |= block
    by_architecture = ModelDeployment.model_validate(example)
    assert by_architecture.spec.model.architecture == CATALOGUE["Llama-3.1-8B"]
    assert by_architecture.spec.model.shape_name == "custom"
    assert ReplicaModel.for_spec(by_architecture.spec).kv_capacity_tokens == \
        ReplicaModel.for_spec(by_profile.spec).kv_capacity_tokens > 0


@pytest.mark.parametrize("fixture", list(CATALOGUE_OF))
def test_the_printed_block_reads_back_as_the_converted_architecture(fixture: str) -> None:
    result = cli("model", "from-config", str(FIXTURES / fixture))
    assert result.exit_code == 0, result.output
    printed = Architecture.model_validate(yaml.safe_load(result.stdout)["architecture"])
    assert printed == architecture_from_config(load(fixture))
    notes = convert(load(fixture)).notes
    assert [line for line in result.stdout.splitlines() if line.startswith("# note: ")] == \
        [f"# note: {n}" for n in notes]


@pytest.mark.parametrize(("content", "said"), [
    (None, "cannot read it: No such file or directory"),
    ("/", "cannot read it: Is a directory"),
    (b"\xff\xfe{}", "not a text file"),
    ("{not json", "not JSON: Expecting property name enclosed in double quotes at line 1, column 2"),
    ('{"model_type": "foo"}', "config.json (model_type 'foo'): unknown architecture; known model types: llama"),
    ('{"model_type": "llama", "vocab_size": 10}', "missing num_hidden_layers, hidden_size, num_attention_heads"),
])
def test_from_config_refuses_bad_files_in_one_line(tmp_path: Path, content: str | bytes | None, said: str) -> None:
    path = tmp_path / "config.json"
    if content == "/":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = cli("model", "from-config", str(path))
    assert result.exit_code == ExitCode.USAGE
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and said in result.stderr
    assert result.stderr.startswith(f"error: {path}: ")


def test_from_config_refuses_a_name_the_spec_would() -> None:
    result = cli("model", "from-config", str(FIXTURES / "openai--gpt-oss-20b_config.json"), "--name", "Llama_8B")
    assert result.exit_code == ExitCode.USAGE and "is not a valid spec.model.name" in result.stderr


def test_model_list_prints_the_catalogue() -> None:
    result = cli("model", "list")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:-1]}
    assert list(rows) == list(CATALOGUE)
    assert rows["DeepSeek-R1"][1:5] == ["671.0B", "37.6B", "35,136", "68.6"]
    assert rows["Llama-3.1-8B"][1:4] == ["8.0B", "8.0B", "65,536"]
    assert "windowed to 128 tokens" in " ".join(rows["gpt-oss-120b"])


def test_defaults_follow_the_configuration_classes() -> None:
    oss = load("openai--gpt-oss-20b_config.json")
    del oss["layer_types"]  # GptOssConfig's default: sliding, full, sliding, ...
    assert architecture_from_config(oss) == CATALOGUE["gpt-oss-20b"]
    scout = load("meta-llama--Llama-4-Scout-17B-16E-Instruct_config.json")
    scout["text_config"]["no_rope_layers"] = [1] * 48  # every layer RoPE, so every layer chunked
    window = architecture_from_config(scout).sliding_window
    assert window is not None and (window.layers, window.window) == (48, 8192)
    llama = load("meta-llama--Meta-Llama-3.1-8B_config.json")
    for name in ("num_key_value_heads", "tie_word_embeddings", "max_position_embeddings"):
        del llama[name]
    shape = architecture_from_config(llama | {"model_type": "qwen3", "tie_word_embeddings": True})
    assert (shape.kv_heads, shape.head_dim, shape.tied_embeddings, shape.context_length) == (32, 128, True, 131_072)
    assert shape.embedding_parameters == 128_256 * 4096
