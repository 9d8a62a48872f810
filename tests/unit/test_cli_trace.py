"""`tokenworks trace generate` and `trace list`: files simulate reads, the summary, and bad arguments."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from controllers.cli import ExitCode, app
from controllers.simulation import trace
from controllers.simulation.workloads import WORKLOADS

runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args), env={"COLUMNS": "300"})


def test_generate_writes_a_trace_simulate_reads_and_summarises_it(tmp_path: Path) -> None:
    out = tmp_path / "r1.csv"
    result = cli("trace", "generate", "--workload", "deepseek-r1-production", "--arrival", "poisson", "--rate",
                 "2.0", "--duration", "600", "--seed", "1", "--output", str(out))
    assert result.exit_code == 0, result.output
    loaded = trace.load(out)
    text = " ".join(result.output.split())
    assert f"Wrote {len(loaded):,} requests" in text
    outputs = sum(r.output_tokens for r in loaded)
    assert f"Offered {outputs / 600:,.0f} output tokens/s" in text
    assert f"max {max(r.output_tokens for r in loaded):,}" in text
    assert len(loaded) == pytest.approx(1200, abs=4 * 1200**0.5)


def test_generate_is_deterministic_by_seed_and_writes_jsonl(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    common = ["trace", "generate", "--workload", "chat", "--arrival", "gamma", "--cv", "2", "--rate", "3",
              "--duration", "120"]
    assert cli(*common, "--seed", "4", "--output", str(a)).exit_code == 0
    assert cli(*common, "--seed", "4", "--output", str(b)).exit_code == 0
    assert cli(*common, "--seed", "5", "--output", str(c)).exit_code == 0
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert trace.load(a)[0].arrival == 0.0


def test_generate_clips_to_the_engines_limits_and_says_how_many(tmp_path: Path) -> None:
    out = tmp_path / "r1.csv"
    result = cli("trace", "generate", "--rate", "5", "--duration", "600", "--max-input", "8192", "--max-output",
                 "4096", "--output", str(out))
    assert result.exit_code == 0, result.output
    loaded = trace.load(out)
    clipped = sum(r.output_tokens == 4096 for r in loaded)
    assert re.search(rf"\b{clipped:,} answers clipped at --max-output 4,096", " ".join(result.output.split()))
    assert max(r.input_tokens for r in loaded) == 8192 and max(r.output_tokens for r in loaded) == 4096


@pytest.mark.parametrize("arrival", [["--arrival", "diurnal", "--amplitude", "0.8", "--period", "300"],
                                     ["--arrival", "ramp", "--rate-end", "6"]])
def test_generate_varying_rates(tmp_path: Path, arrival: list[str]) -> None:
    out = tmp_path / "t.csv"
    result = cli("trace", "generate", "--workload", "mlperf-deepseek-r1", "--rate", "2", "--duration", "600",
                 *arrival, "--output", str(out))
    assert result.exit_code == 0, result.output
    assert len(trace.load(out)) > 0


def test_generated_traces_replay_in_simulate(tmp_path: Path) -> None:
    out = tmp_path / "chat.csv"
    # The 8B example's engine takes prompts up to 8,192 tokens.
    assert cli("trace", "generate", "--workload", "chat", "--rate", "2", "--duration", "60", "--max-input",
               "8192", "--output", str(out)).exit_code == 0
    result = cli("simulate", str(out), "--out", str(tmp_path / "report"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report" / "report.json").exists()


def test_list_names_every_workload_and_its_source() -> None:
    result = cli("trace", "list")
    assert result.exit_code == 0
    for workload in WORKLOADS.values():
        assert workload.name in result.output and workload.source in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["--workload", "gpt-9"], "unknown workload 'gpt-9'; one of deepseek-r1-production"),
    (["--rate", "0"], "the rate must be a positive number, got 0"),
    (["--duration", "-5"], "the duration must be a positive number"),
    (["--cv", "2"], "--cv applies to --arrival gamma, not poisson"),
    (["--arrival", "gamma", "--cv", "0"], "coefficient of variation (--cv) must be a positive number"),
    (["--arrival", "ramp"], "--arrival ramp needs --rate-end"),
    (["--arrival", "diurnal", "--amplitude", "2"], "the amplitude (--amplitude) must be between 0 and 1"),
    (["--max-output", "0"], "--max-output must be at least 1 token"),
    (["--rate", "0.001", "--duration", "1"], "no request arrived in 1 s"),
    (["--arrival", "closed"], "Invalid value for '--arrival'"),
    (["--rate", "1000", "--duration", "86400"], "about 86,400,000 requests, over the 10,000,000 a trace may hold"),
])
def test_bad_arguments_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "t.csv"
    result = cli("trace", "generate", "--output", str(out), *args)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in " ".join(result.output.split())
    assert not out.exists()


def test_an_output_of_another_format_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("trace", "generate", "--output", str(tmp_path / "t.parquet"))
    assert result.exit_code == ExitCode.USAGE
    assert ".csv (generic CSV) or .jsonl (JSONL)" in " ".join(result.output.split())


def test_an_unwritable_output_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = cli("trace", "generate", "--duration", "60", "--output", str(blocker / "t.csv"))
    assert result.exit_code == ExitCode.USAGE
    assert f"cannot write {blocker / 't.csv'}" in " ".join(result.output.split())
