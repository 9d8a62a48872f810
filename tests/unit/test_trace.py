"""Trace loading for the simulator: the three formats, rate and time scaling, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import pytest

from controllers.simulation.trace import TraceError, compress, load, multiply, window

SHARED = Path(__file__).resolve().parents[3] / "shared" / "traces"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_azure_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                 "2023-11-16 18:15:46.6826518,374,44\n2023-11-16 18:15:50.9897723,396,109\n")
    first, second = load(path)
    assert (first.arrival, first.input_tokens, first.output_tokens) == (0.0, 374, 44)
    assert second.arrival == pytest.approx(4.307121, abs=1e-6)  # 7th digit dropped: .989772 - .682651


def test_jsonl_and_generic_csv(tmp_path: Path) -> None:
    jsonl = write(tmp_path, "t.jsonl", '{"timestamp": 1000, "input_length": 10, "output_length": 5}\n'
                  '{"timestamp": 1500, "input_length": 20, "output_length": 7}\n')
    assert [(r.arrival, r.input_tokens) for r in load(jsonl)] == [(0.0, 10), (0.5, 20)]
    generic = write(tmp_path, "g.csv", "arrival_seconds,input_tokens,output_tokens\n3.0,100,10\n3.25,50,5\n")
    assert [r.arrival for r in load(generic)] == [0.0, 0.25]


@pytest.mark.parametrize(("name", "text", "message"), [
    ("empty.csv", "", "empty file"),
    ("header-only.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n", "no requests"),
    ("columns.csv", "TIMESTAMP,Prompt,GeneratedTokens\n", ":1: unknown column(s) ['Prompt']"),
    ("row.csv", "arrival_seconds,input_tokens,output_tokens\n1,2,3\n2,x,3\n",
     ":3: input tokens must be a whole number"),
    ("fields.csv", "arrival_seconds,input_tokens,output_tokens\n1,2\n", ":2: expected 3 fields, got 2"),
    ("zero.csv", "arrival_seconds,input_tokens,output_tokens\n1,2,0\n", ":2: output tokens must be positive"),
    ("order.csv", "arrival_seconds,input_tokens,output_tokens\n5,2,3\n4,2,3\n", ":3: timestamps go backwards"),
    ("stamp.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,1\n", ":2: TIMESTAMP 'yesterday'"),
    ("field.jsonl", '{"timestamp": 1, "input_length": 1, "output_length": 1, "user": "x"}\n',
     ":1: unknown field(s) ['user']"),
    ("broken.jsonl", '{"timestamp": 1,\n', ":1: not JSON"),
])
def test_bad_traces_name_the_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(TraceError) as error:
        load(write(tmp_path, name, text))
    assert message in str(error.value)
    assert name in str(error.value)


def test_multiply_keeps_the_shape_and_window_cuts(tmp_path: Path) -> None:
    path = write(tmp_path, "g.csv", "arrival_seconds,input_tokens,output_tokens\n0,1,1\n4,2,2\n10,3,3\n")
    requests = load(path)
    doubled = multiply(requests, 2)
    assert [r.arrival for r in doubled] == [0, 2, 4, 7, 10, 10]
    assert [r.arrival for r in compress(requests, 2)] == [0, 2, 5]
    assert [(r.arrival, r.input_tokens) for r in window(requests, 3, 5)] == [(1, 2)]


def test_the_shared_azure_traces_load_whole() -> None:
    if not SHARED.exists():
        pytest.skip("../shared/traces is not beside the checkout")
    conv = load(SHARED / "AzureLLMInferenceTrace_conv.csv")
    code = load(SHARED / "AzureLLMInferenceTrace_code.csv")
    assert (len(conv), len(code)) == (19366, 8819)
    assert conv[-1].arrival == pytest.approx(3501.7, abs=0.1)
