"""Trace loading for the simulator: the formats, rate and time scaling, engine limits, errors that name the line."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.simulation.trace import (
    TraceError,
    TraceRequest,
    TraceWarning,
    admissible,
    compress,
    load,
    multiply,
    require_window,
    window,
)

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
    ("field.jsonl", '{"timestamp": 1, "input_length": 1, "hash_ids": [1]}\n', ":1: missing field(s) ['output_length']"),
    ("list.jsonl", '[1, 2, 3]\n', ":1: expected an object"),
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
    # The last request's copy goes into the mean gap (5 s), as it has no next request to fill up to.
    assert [r.arrival for r in doubled] == [0, 2, 4, 7, 10, 12.5]
    assert [r.input_tokens for r in doubled] == [1, 1, 2, 2, 3, 3]
    assert [r.arrival for r in compress(requests, 2)] == [0, 2, 5]
    assert [(r.arrival, r.input_tokens) for r in window(requests, 3, 5)] == [(1, 2)]


def test_the_shared_azure_traces_load_whole() -> None:
    if not SHARED.exists():
        pytest.skip("../shared/traces is not beside the checkout")
    conv = load(SHARED / "AzureLLMInferenceTrace_conv.csv")
    code = load(SHARED / "AzureLLMInferenceTrace_code.csv")
    assert (len(conv), len(code)) == (19366, 8819)
    assert conv[-1].arrival == pytest.approx(3501.7, abs=0.1)


def test_jsonl_extra_fields_such_as_prefix_hashes_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, "mooncake.jsonl",
                 '{"timestamp": 0, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48]}\n'
                 '{"timestamp": 27, "input_length": 6472, "output_length": 26, "hash_ids": [46, 52], "user": "x"}\n')
    assert [(r.arrival, r.input_tokens, r.output_tokens) for r in load(path)] == [(0.0, 6955, 52), (0.027, 6472, 26)]


def generic(times: list[float]) -> list[TraceRequest]:
    return [TraceRequest(t, 100 + i, 10) for i, t in enumerate(times)]


def test_fractional_multipliers_replay_request_i_the_floor_difference_times() -> None:
    requests = generic([float(t) for t in range(10)])
    half = multiply(requests, 0.5)
    assert [r.input_tokens for r in half] == [101, 103, 105, 107, 109]  # every other one, evenly
    assert [r.arrival for r in half] == [1, 3, 5, 7, 9]  # originals keep their time
    one_and_half = multiply(requests, 1.5)
    assert len(one_and_half) == 15
    # Requests 1, 3, 5... get one copy, in the middle of their 1 s gap.
    assert [(r.arrival, r.input_tokens) for r in one_and_half[:5]] == [(0, 100), (1, 101), (1.5, 101), (2, 102),
                                                                       (3, 103)]
    assert multiply(requests, 1.5) == one_and_half  # deterministic
    assert len(multiply(generic([float(t) for t in range(1000)]), 2.37)) == 2370


def test_multiplying_keeps_the_per_minute_shape() -> None:
    # 10 requests in minute 0, 50 in minute 1, 20 in minute 2: x1.5 keeps the proportions.
    times = [6.0 * i for i in range(10)] + [60 + 1.2 * i for i in range(50)] + [120 + 3.0 * i for i in range(20)]
    per_minute = [0, 0, 0, 0]
    for request in multiply(generic(times), 1.5):
        per_minute[int(request.arrival // 60)] += 1
    assert per_minute[:3] == [15, 75, 30] and per_minute[3] == 0


def test_requests_sharing_a_timestamp_spread_their_copies_over_the_gap_to_the_next() -> None:
    requests = generic([0.0, 0.0, 0.0, 4.0])
    tripled = multiply(requests, 3)
    at_zero = sorted(r.arrival for r in tripled if r.arrival < 4)
    # Three originals at 0 and six copies evenly in (0, 4): 4/7, 8/7, ... 24/7.
    assert at_zero[:3] == [0, 0, 0]
    assert at_zero[3:] == pytest.approx([4 * k / 7 for k in range(1, 7)])
    # Round-robin: each of the three requests has one copy in the first half and one in the second.
    copies = [r.input_tokens for r in tripled if 0 < r.arrival < 4]
    assert copies == [100, 101, 102, 100, 101, 102]
    # The last group (4.0) has no next timestamp: its copies fill the mean gap between timestamps (4 s).
    assert sorted(r.arrival for r in tripled if r.arrival >= 4) == pytest.approx([4, 4 + 4 / 3, 4 + 8 / 3])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=40), st.floats(0.05, 8))
def test_multiplied_traces_stay_sorted_and_hold_floor_n_times_f_requests(steps: list[int], factor: float) -> None:
    # Steps of 0 make requests share a timestamp.
    times = [float(sum(steps[:i + 1])) for i in range(len(steps))]
    out = multiply(generic(times), factor)
    assert len(out) == int(len(times) * factor)
    assert all(a.arrival <= b.arrival for a, b in itertools.pairwise(out))
    assert out == [] or out[0].arrival >= times[0]


@pytest.mark.parametrize("factor", [0, -1, float("nan"), float("inf")])
def test_the_multiplier_must_be_positive(factor: float) -> None:
    with pytest.raises(TraceError, match="positive"):
        multiply(generic([0.0, 1.0]), factor)


def test_prompts_over_the_engine_limits_are_rejected_and_counted() -> None:
    requests = [TraceRequest(0, 8192, 10), TraceRequest(1, 8193, 10), TraceRequest(2, 100, 9000),
                TraceRequest(3, 8000, 293), TraceRequest(4, 8000, 292)]
    kept, rejected = admissible(requests, max_input_tokens=8192, max_sequence_tokens=8192 + 100)
    # Over the input limit (1), over the sequence limit (2, 3); at both limits exactly is accepted (0, 4).
    assert [r.arrival for r in kept] == [0, 4]
    assert rejected == 3
    kept, rejected = admissible(requests, max_input_tokens=8192)
    assert [r.arrival for r in kept] == [0, 2, 3, 4] and rejected == 1


def test_an_empty_window_names_the_window_and_the_traces_span() -> None:
    requests = generic([0.0, 10.0, 3501.7])
    assert [r.arrival for r in require_window(requests, 5, 10, "t.csv")] == [5]
    with pytest.raises(TraceError) as error:
        require_window(requests, 4000, 60, "t.csv")
    assert str(error.value) == ("t.csv: no requests in the window from 4,000.0 s to 4,060.0 s; the trace spans "
                                "0.0 to 3,501.7 s (3 requests)")
    with pytest.raises(TraceError) as error:
        require_window(requests, 0, 0, "t.csv")
    assert str(error.value).startswith("t.csv: the window duration must be positive, got 0 s; the trace spans 0.0")
    with pytest.raises(TraceError) as error:
        require_window(requests, 4000, None, "t.csv")
    assert "from 4,000.0 s to the end" in str(error.value)


def test_jsonl_timestamps_that_look_like_seconds_warn_and_say_how_to_fix(tmp_path: Path) -> None:
    rows = "".join(f'{{"timestamp": {i * 0.2:.1f}, "input_length": 10, "output_length": 5}}\n' for i in range(500))
    path = write(tmp_path, "seconds.jsonl", rows)
    with pytest.warns(TraceWarning) as caught:
        requests = load(path)
    assert requests[-1].arrival == pytest.approx(0.0998)  # still read as milliseconds, as documented
    message = str(caught[0].message)
    assert "500 requests span 0.100 s" in message and "look like seconds" in message
    assert "multiply them by 1000" in message and "seconds.jsonl" in message


def test_jsonl_in_milliseconds_loads_without_a_warning(tmp_path: Path) -> None:
    # 500 requests 200 ms apart (5 per second), and a short trace in seconds too small to judge.
    rows = "".join(f'{{"timestamp": {i * 200}, "input_length": 10, "output_length": 5}}\n' for i in range(500))
    assert len(load(write(tmp_path, "ms.jsonl", rows))) == 500  # filterwarnings=error fails any warning
    few = "".join(f'{{"timestamp": {i * 0.2:.1f}, "input_length": 10, "output_length": 5}}\n' for i in range(50))
    assert len(load(write(tmp_path, "few.jsonl", few))) == 50
