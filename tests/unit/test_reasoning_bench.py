"""The reasoning benchmark's configurations: the example manifests, the traces, the derived rates, and one
tiny configuration end to end through bench/reasoning.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import bench.autoscaling
from bench.reasoning import (
    FLEET,
    MODELS,
    PAIRS,
    TRAFFIC,
    ReasoningConfig,
    deployment,
    per_replica_rate,
    run,
)
from controllers.reconcile import engine_limit_problems
from controllers.simulation.workloads import WORKLOADS
from crds.gpus import GPUS_PER_NODE
from crds.models import ModelDeployment

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize("name", sorted(MODELS.values()))
def test_each_reasoning_example_validates_fits_one_node_and_its_limits(name: str) -> None:
    md = ModelDeployment.model_validate(yaml.safe_load((EXAMPLES / name).read_text()))
    spec = md.spec
    # Single-node: applied as a Deployment, not a LeaderWorkerSet.
    assert spec.gpus_per_replica <= GPUS_PER_NODE[spec.gpu.product]
    assert engine_limit_problems(md) == []
    # Room for the longest answer of every workload the suite runs on it.
    workloads = {TRAFFIC[t][0] for m, t in PAIRS if MODELS[m] == name}
    assert all(spec.engine.max_output_length >= WORKLOADS[w].output.maximum for w in workloads)
    assert spec.engine.max_output_length >= 32768
    slo = spec.autoscaling.slo
    assert (slo.ttft_milliseconds, slo.inter_token_latency_milliseconds) == (2000, 80)


def test_the_deepseek_examples_are_the_issues_configurations() -> None:
    h200 = deployment("r1-h200", 8).spec
    b200 = deployment("r1-b200", 8).spec
    for spec, gpu, precision in ((h200, "H200-SXM", "fp8"), (b200, "B200", "fp4")):
        assert (spec.model.profile, spec.gpu.product, spec.engine.precision) == ("DeepSeek-R1", gpu, precision)
        assert (spec.parallelism.tensor, spec.parallelism.expert, spec.parallelism.attention_data_parallel) == \
            (8, 8, True)
        assert spec.engine.kv_cache_precision == "fp8"


@pytest.mark.parametrize(("model", "traffic"), PAIRS)
def test_each_configuration_generates_its_trace_within_the_engine_limits(model: str, traffic: str) -> None:
    config = ReasoningConfig(model, traffic, minutes=2)
    requests = config.requests(2)
    assert requests == config.requests(2)  # seeded
    engine = config.deployment(1).spec.engine
    assert all(r.input_tokens <= engine.max_input_length and r.output_tokens <= engine.max_output_length
               for r in requests)
    assert all(0 <= r.arrival < 120 for r in requests)
    # Arrivals are drawn around the derived mean rate (diurnal: the first two minutes sit near its low).
    low = config.arrival().rate_at(0) * 120
    assert len(requests) >= 0.5 * low
    assert config.oracle_lookback >= 1  # a mean reasoning answer outlasts a minute at 80 ms a token


def test_rates_follow_the_models_capacity() -> None:
    # The same traffic on the faster B200 (FP4) arrives faster: the rate is the model's, not hand-tuned.
    for traffic in ("production", "mlperf"):
        h200, b200 = ReasoningConfig("r1-h200", traffic), ReasoningConfig("r1-b200", traffic)
        assert b200.rate > h200.rate
        assert b200.rate / h200.rate == pytest.approx(per_replica_rate("r1-b200", traffic)
                                                      / per_replica_rate("r1-h200", traffic))
        assert h200.arrival().peak() == pytest.approx(FLEET * per_replica_rate("r1-h200", traffic))


def test_a_tiny_configuration_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench.autoscaling, "CACHE", tmp_path)
    config = ReasoningConfig("nemotron-h200", "nemotron", minutes=1)
    printed: list[str] = []
    results = run([config], ["tokenworks", "static"], 1, max_replicas=4, out=printed.append)
    (rows,) = results.values()
    assert [r["policy"] for r in rows] == ["tokenworks", "static"]
    for row in rows:
        assert 0 <= row["kv_bound"] <= 1 and 0 <= row["batch_bound"] <= 1
        assert 0 < row["attainment"] <= 1 and row["gpu_hours"] > 0
    text = "\n".join(printed)
    assert "### nemotron-h200/nemotron" in text
    assert "| tokenworks |" in text and "| static |" in text
    assert "binds first" in text
    assert list(tmp_path.glob("reasoning-nemotron-h200-nemotron-*.json"))  # the oracle was cached
