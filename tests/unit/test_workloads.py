"""Synthetic traces: the length distributions against their sources, the arrival processes, seeds, and files."""

from __future__ import annotations

import itertools
import math
import random
import statistics
from collections.abc import Callable
from pathlib import Path

import pytest

from controllers.simulation import trace
from controllers.simulation.workloads import (
    WORKLOADS,
    Diurnal,
    Gamma,
    Poisson,
    QuantileFunction,
    Ramp,
    WorkloadError,
    from_quantiles,
    generate,
    lognormal,
    sigma_for_max_as_p99,
    truncated,
    write,
)

SAMPLES = 20_000
# Every sampled figure is held to four standard errors: a seeded test either always passes or always
# fails, and four is far enough out (6 in 100,000 two-sided) that a correct model is not refused by the
# seed chosen, and close enough that a wrong shape is.
Z = 4.0


def sample(q: QuantileFunction, n: int = SAMPLES, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    return [q.tokens(rng.random()) for _ in range(n)]


def second_moment(q: QuantileFunction) -> float:
    """E[X^2] = integral of Q(u)^2: on a log-linear segment exp(2 x linear) integrates in closed form."""
    total = 0.0
    for (p0, t0), (p1, t1) in itertools.pairwise(q.knots):
        total += (p1 - p0) * (t0 * t0 if t1 == t0 else (t1 * t1 - t0 * t0) / (2 * math.log(t1 / t0)))
    return total


def test_a_quantile_function_is_log_linear_between_knots() -> None:
    q = QuantileFunction(((0.0, 1.0), (0.5, 100.0), (1.0, 10_000.0)))
    assert q(0.25) == pytest.approx(10.0)  # halfway in probability is halfway in log: sqrt(1 x 100)
    assert q(0.75) == pytest.approx(1000.0)
    assert q.cdf(10.0) == pytest.approx(0.25) and q.cdf(0.5) == 0.0 and q.cdf(20_000) == 1.0
    # Exact mean: (100 - 1) / ln 100 / 2 + (10,000 - 100) / ln 100 / 2 = 1,085.7, and a fine midpoint sum agrees.
    assert q.mean() == pytest.approx((99 + 9900) / math.log(100) / 2)
    assert q.mean() == pytest.approx(sum(q((k + 0.5) / 100_000) for k in range(100_000)) / 100_000, rel=1e-4)


@pytest.mark.parametrize("knots", [((0.1, 5.0), (1.0, 9.0)), ((0.0, 5.0), (0.5, 4.0), (1.0, 9.0)),
                                   ((0.0, 0.0), (1.0, 9.0)), ((0.0, 1.0), (0.5, 2.0), (0.5, 3.0), (1.0, 9.0))])
def test_invalid_knots_are_refused(knots: tuple[tuple[float, float], ...]) -> None:
    with pytest.raises(ValueError, match="knot"):
        QuantileFunction(knots)


def test_published_quantiles_are_the_knots() -> None:
    for workload in WORKLOADS.values():
        for length, published in ((workload.output, workload.published_output),
                                  (workload.input, workload.published_input)):
            for p, tokens in published.quantiles:
                assert length(p) == pytest.approx(tokens), (workload.name, p)
            if published.maximum is not None:
                assert length.maximum == published.maximum and length(1.0) == pytest.approx(published.maximum)


def test_the_histogram_shares_of_deepseek_r1_production_are_kept() -> None:
    output = WORKLOADS["deepseek-r1-production"].output
    # Cumulative shares at the bin edges: <256 7.3%, <512 34.3%, ..., <16,384 99.6% (ServeGen).
    for edge, share in ((256, 0.073), (512, 0.343), (1024, 0.575), (2048, 0.842), (4096, 0.920), (8192, 0.974),
                        (16384, 0.996)):
        assert output.cdf(edge) == pytest.approx(share), edge


# How far each model's own mean may sit from the published one. Fitted lognormals are fitted to it (the
# bisection leaves nothing; the Nemotron mixture's CDF is tabulated, 0.5%). ServeGen's quantile tables
# give the mean only through interpolation: its widest segments are the top ones (p99 to the max), where
# log-linear puts more weight than the real tail, 1.2% too much for outputs (1,545 for 1,527) and 9.5% for
# inputs (1,388 for 1,268: p99 23,423 to the max 57,284). Azure conv's inputs: 1,181 for 1,155, 2.3%.
MEAN_TOLERANCE = {
    ("deepseek-r1-production", "output"): 0.015, ("deepseek-r1-production", "input"): 0.10,
    ("mlperf-deepseek-r1", "output"): 1e-6, ("nemotron-super-49b-reasoning", "output"): 0.005,
    ("chat", "output"): 1e-6, ("chat", "input"): 0.03,
}


@pytest.mark.parametrize(("name", "which"), sorted(MEAN_TOLERANCE))
def test_model_means_are_near_the_published_means(name: str, which: str) -> None:
    workload = WORKLOADS[name]
    length, published = ((workload.output, workload.published_output) if which == "output"
                         else (workload.input, workload.published_input))
    assert published.mean is not None
    assert length.mean() == pytest.approx(published.mean, rel=MEAN_TOLERANCE[name, which])


@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_samples_land_on_the_model(name: str) -> None:
    """Sampled means within Z standard errors (sd / sqrt(n), the sd from the model's own second moment),
    the share below each published quantile within Z x sqrt(p (1 - p) / n) of the model's, the max kept."""
    workload = WORKLOADS[name]
    for length, published in ((workload.output, workload.published_output),
                              (workload.input, workload.published_input)):
        drawn = sample(length)
        sd = math.sqrt(second_moment(length) - length.mean() ** 2)
        assert statistics.fmean(drawn) == pytest.approx(length.mean(), abs=Z * sd / math.sqrt(SAMPLES))
        assert max(drawn) <= length.maximum and min(drawn) >= 1
        for p, tokens in published.quantiles:
            # A whole number of tokens is at most x when the quantile rounds down to it, below x + 0.5.
            share = sum(d <= tokens for d in drawn) / SAMPLES
            assert share == pytest.approx(length.cdf(tokens + 0.5), abs=Z * math.sqrt(p * (1 - p) / SAMPLES))


def test_deepseek_r1_production_samples_reproduce_the_published_shape() -> None:
    drawn = sample(WORKLOADS["deepseek-r1-production"].output, n=50_000)
    # The mean of a heavy tail converges slowly: sd 2,640, so 4 standard errors of 50,000 draws is 47 tokens.
    assert statistics.fmean(drawn) == pytest.approx(1527, abs=18 + 47)  # 18: the model's own excess
    # A sampled p-quantile's relative error is sqrt(p (1 - p) / n) x d(ln Q)/du: at p99, 0.00044 x 27 (ln of
    # 12,607 / 8,192 over 0.016) = 1.2%, so 5% is four of them; lower quantiles are tighter still.
    cuts = statistics.quantiles(drawn, n=100)
    for p, published in ((0.10, 287), (0.50, 792), (0.90, 3432), (0.99, 12607)):
        assert cuts[round(p * 100) - 1] == pytest.approx(published, rel=0.05), p
    assert max(drawn) <= 32768


def test_a_fitted_lognormal_keeps_its_maximum_and_mean() -> None:
    q = lognormal(3886.2, 1.0, 20_000)
    assert q.mean() == pytest.approx(3886.2, rel=1e-9)
    assert q.maximum == 20_000 and q.tokens(1.0) == 20_000
    # Cutting at 20,000 moves the median above the uncut mean / e^0.5 = 2,357 (the cut mass moves down).
    assert 2357 < q(0.5) < 3886


def test_sigma_for_max_as_p99_puts_the_max_at_p99() -> None:
    sigma = sigma_for_max_as_p99(2828, 7540)
    mu = math.log(2828) - sigma**2 / 2
    assert math.exp(mu + sigma * statistics.NormalDist().inv_cdf(0.99)) == pytest.approx(7540)
    assert sigma == pytest.approx(0.469, abs=1e-3)


def test_truncation_renormalises_below_the_cut() -> None:
    base = WORKLOADS["deepseek-r1-production"].input
    cut = truncated(base, 3140)
    assert cut.maximum == 3140
    kept = base.cdf(3140)
    assert cut(0.5) == pytest.approx(base(0.5 * kept))
    assert from_quantiles(((0.5, 10.0), (1.0, 20.0))).knots[0] == (0.0, 1.0)


def test_poisson_has_its_rate_and_unit_cv() -> None:
    times = Poisson(5.0).times(4000.0, random.Random(3))
    expected = 5.0 * 4000.0
    assert len(times) == pytest.approx(expected, abs=Z * math.sqrt(expected))  # Poisson count: sd = sqrt(mean)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Exponential gaps: the sample CV's standard error is about sqrt(2 / n) = 0.01 at 20,000 gaps.
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=Z * math.sqrt(2 / len(gaps)))
    assert all(0 <= t < 4000.0 for t in times) and times == sorted(times)


@pytest.mark.parametrize("cv", [0.5, 2.0, 3.0])
def test_gamma_gaps_have_the_chosen_cv(cv: float) -> None:
    times = Gamma(5.0, cv).times(4000.0, random.Random(4))
    expected = 5.0 * 4000.0
    # A renewal process's count has variance about mean x CV^2.
    assert len(times) == pytest.approx(expected, abs=Z * cv * math.sqrt(expected))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # The sample CV's standard error: (CV / 2) sqrt((kurtosis - 1) / n), gamma's kurtosis 3 + 6 CV^2.
    error = cv / 2 * math.sqrt((2 + 6 * cv * cv) / len(gaps))
    assert statistics.stdev(gaps) / statistics.fmean(gaps) == pytest.approx(cv, abs=Z * error)


def expected_between(rate_at: Diurnal | Ramp, start: float, end: float, steps: int = 1000) -> float:
    width = (end - start) / steps
    return sum(rate_at.rate_at(start + (k + 0.5) * width) for k in range(steps)) * width


@pytest.mark.parametrize("arrival", [Diurnal(5.0, 0.8, 3600.0), Ramp(1.0, 9.0, 3600.0)], ids=["diurnal", "ramp"])
def test_thinning_follows_the_rate_curve(arrival: Diurnal | Ramp) -> None:
    times = arrival.times(3600.0, random.Random(5))
    for start in range(0, 3600, 300):
        expected = expected_between(arrival, start, start + 300)
        count = sum(start <= t < start + 300 for t in times)
        assert count == pytest.approx(expected, abs=Z * math.sqrt(expected)), start
    if isinstance(arrival, Diurnal):
        # Lowest at 0 and at the period, highest half-way: 1 req/s, then 9 req/s.
        assert arrival.rate_at(0) == pytest.approx(1.0) and arrival.rate_at(1800) == pytest.approx(9.0)


@pytest.mark.parametrize("make", [lambda: Poisson(0), lambda: Gamma(1, 0), lambda: Diurnal(1, 1.5, 60),
                                  lambda: Diurnal(1, 0.5, 0), lambda: Ramp(1, -1, 60), lambda: Poisson(math.inf)])
def test_bad_arrival_arguments_are_refused(make: Callable[[], object]) -> None:
    with pytest.raises(WorkloadError):
        make()


def test_the_same_seed_gives_the_same_trace_and_another_arrival_keeps_the_lengths() -> None:
    workload = WORKLOADS["mlperf-deepseek-r1"]
    first = generate(workload, Poisson(2.0), 600, seed=11).requests
    assert first == generate(workload, Poisson(2.0), 600, seed=11).requests
    assert first != generate(workload, Poisson(2.0), 600, seed=12).requests
    bursty = generate(workload, Gamma(2.0, 3.0), 600, seed=11).requests
    common = min(len(first), len(bursty))
    assert [(r.input_tokens, r.output_tokens) for r in first[:common]] == \
        [(r.input_tokens, r.output_tokens) for r in bursty[:common]]
    assert [r.arrival for r in first[:common]] != [r.arrival for r in bursty[:common]]


def test_clipping_to_an_engines_limits_is_counted() -> None:
    workload = WORKLOADS["deepseek-r1-production"]
    whole = generate(workload, Poisson(5.0), 600, seed=2)
    clipped = generate(workload, Poisson(5.0), 600, seed=2, max_input=8192, max_output=4096)
    assert clipped.clipped_inputs == sum(r.input_tokens > 8192 for r in whole.requests) > 0
    assert clipped.clipped_outputs == sum(r.output_tokens > 4096 for r in whole.requests) > 0
    assert max(r.input_tokens for r in clipped.requests) == 8192
    assert max(r.output_tokens for r in clipped.requests) == 4096
    with pytest.raises(WorkloadError, match="--max-output"):
        generate(workload, Poisson(5.0), 600, seed=2, max_output=0)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_written_traces_load_back(tmp_path: Path, suffix: str) -> None:
    requests = generate(WORKLOADS["chat"], Gamma(3.0, 2.0), 300, seed=9).requests
    path = tmp_path / f"t{suffix}"
    write(requests, path)
    loaded = trace.load(path)
    assert [(r.input_tokens, r.output_tokens) for r in loaded] == \
        [(r.input_tokens, r.output_tokens) for r in requests]
    # The reader replays from the first request; both formats keep microseconds.
    first = requests[0].arrival
    assert [r.arrival for r in loaded] == pytest.approx([r.arrival - first for r in requests], abs=2e-6)


def test_an_unknown_file_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match=r"\.csv .* or \.jsonl"):
        write(generate(WORKLOADS["chat"], Poisson(1.0), 10, seed=1).requests, tmp_path / "t.txt")


def test_a_trace_too_large_to_hold_is_refused_before_drawing() -> None:
    # 200 req/s at the diurnal peak of 2 x 100 for a day: 17 million candidates.
    with pytest.raises(WorkloadError, match="over the 10,000,000 a trace may hold"):
        generate(WORKLOADS["chat"], Diurnal(100.0, 1.0, 3600.0), 86_400, seed=1)
