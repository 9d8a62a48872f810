"""Synthetic request traces: named token-length distributions (reasoning and chat) and arrival processes.

Pure and seeded: ``generate(workload, arrival, duration, seed)`` returns the same requests for the same
arguments. Python guarantees ``random.Random(seed).random()`` the same sequence in every version
(docs.python.org/3/library/random.html, "Notes on Reproducibility"), and lengths and Poisson gaps use
only ``random()``; gamma gaps use ``gammavariate``, whose algorithm Python may change between versions.
``write`` saves them in a format ``controllers.simulation.trace.load`` reads.

Lengths. Each distribution is a piecewise log-linear quantile function (inverse CDF): knots
``(probability, tokens)`` from 0 to 1, and between two knots the logarithm of the length moves linearly
with the probability, so sampling is ``quantile(u)`` for a uniform ``u``. A published quantile table
becomes knots as it stands; a published mean (and maximum) with no quantiles becomes a lognormal whose
location is fitted so that the knots' own mean is the published one, cut at the maximum. Input and output
lengths are drawn independently: the sources publish marginals only.

Sources (each figure as /work/shared/calibration/hopper-blackwell-moe.md "Output lengths of reasoning
workloads" cites it; lengths in tokens):

| Workload: length | Published figures | Shape here |
|---|---|---|
| deepseek-r1-production: out | mean 1,527; p10 287 p50 792 p90 3,432 p99 12,607; max 32,768 [1] | those + histogram |
| deepseek-r1-production: in | mean 1,268; p10 18 p50 208 p90 2,092 p99 23,423; max 57,284 [1] | those quantiles |
| mlperf-deepseek-r1: out | mean 3,886.2; max 20,000 [2] | lognormal, sigma 1.0 (assumed) |
| mlperf-deepseek-r1: in | max 3,140 [2] | [1]'s input below 3,140 (assumed) |
| nemotron-super-49b-reasoning: out | mean / max: math 2,828 / 7,540, logic 4,552 / 14,194 [3] | half each; lognormals |
| nemotron-super-49b-reasoning: in | none | as mlperf-deepseek-r1 (assumed) |
| chat: out | non-reasoning means 15-155 [1] | lognormal mean 85, sigma 1, max 2,048 |
| chat: in | p10 207 p50 1,020 p90 2,734 p99 4,142; max 14,050 [4] | those quantiles |

[1] alibaba/ServeGen@f891d1189eb32b3868dfc443800c4150548c282a ``data/reason/deepseek-r1/`` (73 clients,
    aggregated in the calibration file); its non-reasoning language models average 15-155 output tokens.
[2] mlcommons/inference@3b98f3d39e9e2426c49b8d1795a9dcc8d6cdd7ee ``language/deepseek-r1/README.md``.
[3] cpldcpu/LRMTokenEconomy@d5cc353cf1250b805f955504b807530248154e62 ``evaluation_stats.csv``
    (Llama-3.3-Nemotron-Super-49B-v1, a dense 49B model).
[4] Azure/AzurePublicDataset@b469a113cedca53ddc3bdea71a143dc4b7d8700c ``data/AzureLLMInferenceTrace_conv.csv``
    (computed here over its 19,366 requests; /work/shared/traces).

Arrivals: ``Poisson`` (exponential gaps, CV 1), ``Gamma`` (gamma gaps of a chosen CV: over 1 is burstier
than Poisson), and two non-homogeneous Poisson processes drawn by thinning (Lewis and Shedler 1979):
``Diurnal`` (a sinusoid around the mean rate) and ``Ramp`` (a linear change of rate).
"""

from __future__ import annotations

import bisect
import csv
import itertools
import json
import math
import random
import statistics
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from controllers.simulation.trace import GENERIC_COLUMNS, TraceRequest

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path


class WorkloadError(ValueError):
    """Arguments no trace can be generated from (an unknown workload, a non-positive rate)."""


@dataclass(frozen=True)
class QuantileFunction:
    """A piecewise log-linear inverse CDF. ``knots`` are ``(probability, tokens)``: probabilities rise
    strictly from 0 to 1 and tokens never fall and are at least 1. Between knots ``(0.50, 792)`` and
    ``(0.575, 1024)``, ``quantile(0.5375)`` is ``exp((ln 792 + ln 1024) / 2)`` = 900 tokens."""

    knots: tuple[tuple[float, float], ...]

    def __post_init__(self) -> None:
        probabilities = [p for p, _ in self.knots]
        tokens = [t for _, t in self.knots]
        if len(self.knots) < 2 or probabilities[0] != 0.0 or probabilities[-1] != 1.0:
            raise ValueError(f"knots must run from probability 0 to 1, got {probabilities}")
        if any(b <= a for a, b in itertools.pairwise(probabilities)):
            raise ValueError(f"knot probabilities must rise strictly, got {probabilities}")
        if tokens[0] < 1 or any(b < a for a, b in itertools.pairwise(tokens)):
            raise ValueError(f"knot tokens must be at least 1 and never fall, got {tokens}")

    def __call__(self, u: float) -> float:
        if not 0.0 <= u <= 1.0:
            raise ValueError(f"a probability is between 0 and 1, got {u}")
        probabilities = [p for p, _ in self.knots]
        i = min(max(bisect.bisect_right(probabilities, u) - 1, 0), len(self.knots) - 2)
        (p0, t0), (p1, t1) = self.knots[i], self.knots[i + 1]
        return math.exp(math.log(t0) + (u - p0) / (p1 - p0) * (math.log(t1) - math.log(t0)))

    def cdf(self, tokens: float) -> float:
        """The share of lengths at or below ``tokens`` (the inverse of ``__call__``)."""
        if tokens < self.knots[0][1]:
            return 0.0
        for (p0, t0), (p1, t1) in itertools.pairwise(self.knots):
            if tokens < t1:
                return p0 if t1 == t0 else p0 + (p1 - p0) * math.log(tokens / t0) / math.log(t1 / t0)
        return 1.0

    @property
    def maximum(self) -> float:
        return self.knots[-1][1]

    def mean(self) -> float:
        """Exact mean: a segment whose log rises linearly from ``t0`` to ``t1`` averages
        ``(t1 - t0) / ln(t1 / t0)`` (``t0`` when flat), weighted by its probability width."""
        total = 0.0
        for (p0, t0), (p1, t1) in itertools.pairwise(self.knots):
            average = t0 if t1 == t0 else (t1 - t0) / math.log(t1 / t0)
            total += (p1 - p0) * average
        return total

    def tokens(self, u: float) -> int:
        """A whole length: the quantile rounded, at least 1, never above the maximum."""
        return min(max(1, round(self(u))), math.floor(self.maximum))


def from_quantiles(points: Sequence[tuple[float, float]], minimum: float = 1.0) -> QuantileFunction:
    """Knots from published ``(probability, tokens)`` pairs (histogram edges and quantiles may be mixed;
    they are sorted) with ``minimum`` at probability 0 unless a pair gives it."""
    ordered = sorted(points)
    if ordered[0][0] > 0.0:
        ordered.insert(0, (0.0, minimum))
    return QuantileFunction(tuple((float(p), float(t)) for p, t in ordered))


# The probabilities a lognormal is tabulated at: dense in the tail, where the long answers are.
_LOGNORMAL_GRID = (0.0, 0.001, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.975,
                   0.99, 0.995, 0.999, 1.0)


def _lognormal_knots(mu: float, sigma: float, maximum: float) -> QuantileFunction:
    normal = statistics.NormalDist()
    kept = normal.cdf((math.log(maximum) - mu) / sigma)  # the share below the cut, renormalised to 1
    knots: list[tuple[float, float]] = []
    for p in _LOGNORMAL_GRID:
        # p = 0 would be a length of 0: the quantile at 1e-4 stands in for the shortest.
        value = maximum if p == 1.0 else math.exp(mu + sigma * normal.inv_cdf(max(p, 1e-4) * kept))
        knots.append((p, min(max(value, 1.0), maximum)))
    return QuantileFunction(tuple(knots))


def lognormal(mean: float, sigma: float, maximum: float) -> QuantileFunction:
    """A lognormal of log-spread ``sigma`` cut at ``maximum``, its location fitted (bisection) so that the
    tabulated function's mean is ``mean``. Uncut, the median would be ``mean / exp(sigma^2 / 2)``: for
    MLPerf's 3,886 tokens and sigma 1.0 that is 2,357."""
    if not 0 < mean < maximum or sigma <= 0:
        raise ValueError(f"need 0 < mean < maximum and sigma > 0, got {mean}, {maximum}, {sigma}")
    low, high = math.log(mean) - 10 * sigma, math.log(maximum) + 10 * sigma
    for _ in range(200):
        mid = (low + high) / 2
        if _lognormal_knots(mid, sigma, maximum).mean() < mean:
            low = mid
        else:
            high = mid
    return _lognormal_knots((low + high) / 2, sigma, maximum)


def sigma_for_max_as_p99(mean: float, maximum: float) -> float:
    """The sigma for which an uncut lognormal of this ``mean`` has ``maximum`` as its p99: solves
    ``ln(max / mean) = 2.326 sigma - sigma^2 / 2``. Nemotron math (2,828 mean, 7,540 max): 0.469."""
    z = statistics.NormalDist().inv_cdf(0.99)
    ratio = math.log(maximum / mean)
    if ratio <= 0 or ratio > z * z / 2:
        raise ValueError(f"no lognormal has mean {mean} and p99 {maximum}")
    return z - math.sqrt(z * z - 2 * ratio)


def truncated(q: QuantileFunction, maximum: float) -> QuantileFunction:
    """``q`` conditioned on lengths at most ``maximum``: ``q(u x F(maximum))`` as knots."""
    kept = q.cdf(maximum)
    if kept <= 0:
        raise ValueError(f"no length at or below {maximum}")
    knots = [(p / kept, t) for p, t in q.knots if p < kept and t < maximum]
    knots.append((1.0, maximum))
    return QuantileFunction(tuple(knots))


def mixture(parts: Sequence[tuple[float, QuantileFunction]], points: int = 240) -> QuantileFunction:
    """The mixture of ``(weight, q)`` parts: its CDF is the weighted sum of theirs, tabulated at
    ``points`` log-spaced lengths from the smallest minimum to the largest maximum plus every part's
    knots, and inverted there (piecewise log-linear again)."""
    total = sum(w for w, _ in parts)
    low = min(q.knots[0][1] for _, q in parts)
    high = max(q.maximum for _, q in parts)
    grid = {low * (high / low) ** (k / (points - 1)) for k in range(points)}
    grid |= {t for _, q in parts for _, t in q.knots}
    knots: list[tuple[float, float]] = [(0.0, low)]
    for tokens in sorted(grid):
        p = min(sum(w * q.cdf(tokens) for w, q in parts) / total, 1.0)
        if p > knots[-1][0]:
            knots.append((p, tokens))
    if knots[-1][0] < 1.0:
        knots.append((1.0, high))
    else:
        knots[-1] = (1.0, high)
    return QuantileFunction(tuple(knots))


@dataclass(frozen=True)
class Published:
    """The figures a source publishes for one length (tests and docs compare the model to them)."""

    mean: float | None = None
    quantiles: tuple[tuple[float, float], ...] = ()
    maximum: float | None = None


@dataclass(frozen=True)
class Workload:
    name: str
    summary: str
    source: str
    output: QuantileFunction
    input: QuantileFunction
    published_output: Published = field(default_factory=Published)
    published_input: Published = field(default_factory=Published)


# ServeGen DeepSeek-R1 (alibaba/ServeGen@f891d11, data/reason/deepseek-r1/, aggregated over its 73 clients
# in /work/shared/calibration/hopper-blackwell-moe.md "Output lengths of reasoning workloads").
_R1_OUTPUT_QUANTILES = ((0.10, 287), (0.25, 427), (0.50, 792), (0.75, 1499), (0.90, 3432), (0.95, 5701),
                        (0.99, 12607))
# The histogram's cumulative shares at its bin edges: <256 7.3%, +27.0% to 512, +23.2% to 1,024, +26.7% to
# 2,048, +7.8% to 4,096, +5.4% to 8,192, +2.2% to 16,384, the last 0.4% up to the 32,768 cap.
_R1_OUTPUT_EDGES = ((0.073, 256), (0.343, 512), (0.575, 1024), (0.842, 2048), (0.920, 4096), (0.974, 8192),
                    (0.996, 16384), (1.0, 32768))
_R1_INPUT_QUANTILES = ((0.10, 18), (0.25, 41), (0.50, 208), (0.75, 482), (0.90, 2092), (0.95, 6714),
                       (0.99, 23423), (1.0, 57284))
# The shortest answer is not published; 16 tokens (a one-line answer after a minimal think block) is
# assumed. Only the lowest 7.3% (below 256) depends on it: 1 instead would lower the mean by 3 tokens.
R1_SHORTEST_OUTPUT = 16.0
# Azure LLM inference trace 2023, conversation service (computed from data/AzureLLMInferenceTrace_conv.csv
# @b469a113, 19,366 requests, linear-interpolated quantiles): the prompts of a chat service.
_AZURE_CONV_INPUT_QUANTILES = ((0.10, 207), (0.25, 396), (0.50, 1020), (0.75, 1189), (0.90, 2734),
                               (0.95, 4083), (0.99, 4142), (1.0, 14050))

_R1_PRODUCTION_INPUT = from_quantiles(_R1_INPUT_QUANTILES, minimum=1)
# MLPerf's prompts (AIME, MATH500, GPQA, MMLU-Pro, LiveCodeBench) publish only a maximum, 3,140: their shape
# is assumed to be DeepSeek-R1 production traffic's below that length.
MLPERF_MAX_INPUT = 3140
_MLPERF_INPUT = truncated(_R1_PRODUCTION_INPUT, MLPERF_MAX_INPUT)
# The spread assumed for MLPerf's outputs and chat: production DeepSeek-R1's own log-spread,
# ln(p90 / p50) / 1.2816 = 1.14 above the median and ln(p50 / p10) / 1.2816 = 0.79 below, about 1.0.
ASSUMED_SIGMA = 1.0

_NEMOTRON_MATH = lognormal(2828, sigma_for_max_as_p99(2828, 7540), 7540)
_NEMOTRON_LOGIC = lognormal(4552, sigma_for_max_as_p99(4552, 14194), 14194)

WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload(
        "deepseek-r1-production",
        "DeepSeek-R1 on Alibaba Cloud Model Studio: production reasoning traffic",
        "alibaba/ServeGen@f891d1189eb32b3868dfc443800c4150548c282a data/reason/deepseek-r1/",
        from_quantiles(_R1_OUTPUT_QUANTILES + _R1_OUTPUT_EDGES, minimum=R1_SHORTEST_OUTPUT),
        _R1_PRODUCTION_INPUT,
        Published(1527, _R1_OUTPUT_QUANTILES, 32768),
        Published(1268, _R1_INPUT_QUANTILES[:-1], 57284),
    ),
    Workload(
        "mlperf-deepseek-r1",
        "MLPerf Inference DeepSeek-R1 prompts (AIME, MATH500, GPQA, MMLU-Pro, LiveCodeBench); lognormal "
        "outputs (sigma 1.0, assumed)",
        "mlcommons/inference@3b98f3d39e9e2426c49b8d1795a9dcc8d6cdd7ee language/deepseek-r1/README.md",
        lognormal(3886.2, ASSUMED_SIGMA, 20000),
        _MLPERF_INPUT,
        Published(3886.2, (), 20000),
        Published(None, (), MLPERF_MAX_INPUT),
    ),
    Workload(
        "nemotron-super-49b-reasoning",
        "Llama-3.3-Nemotron-Super-49B-v1 (dense) thinking on math and logic puzzles, half each; lognormals "
        "with each maximum as p99",
        "cpldcpu/LRMTokenEconomy@d5cc353cf1250b805f955504b807530248154e62 evaluation_stats.csv",
        mixture(((0.5, _NEMOTRON_MATH), (0.5, _NEMOTRON_LOGIC))),
        _MLPERF_INPUT,
        Published((2828 + 4552) / 2, (), 14194),
        Published(None, (), MLPERF_MAX_INPUT),
    ),
    Workload(
        "chat",
        "Non-reasoning chat: ServeGen language models' 15-155 token mean answers (85 taken), Azure conv "
        "2023 prompts",
        "alibaba/ServeGen@f891d1189eb32b3868dfc443800c4150548c282a (non-reasoning language models); "
        "Azure/AzurePublicDataset@b469a113cedca53ddc3bdea71a143dc4b7d8700c data/AzureLLMInferenceTrace_conv.csv",
        lognormal(85, ASSUMED_SIGMA, 2048),
        from_quantiles(_AZURE_CONV_INPUT_QUANTILES, minimum=2),
        Published(85, (), 2048),  # 85 is chosen within ServeGen's 15-155, the cap assumed: the fit's targets
        Published(1155, _AZURE_CONV_INPUT_QUANTILES[:-1], 14050),
    ),
)}


class Arrival(Protocol):
    """An open-loop arrival process: request times in ``[0, duration)``, sorted."""

    def times(self, duration: float, rng: random.Random) -> list[float]: ...

    def rate_at(self, t: float) -> float: ...

    def peak(self) -> float:
        """The highest rate, which bounds how many requests ``times`` can return."""
        ...

    def describe(self) -> str: ...


def _positive(value: float, what: str) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise WorkloadError(f"{what} must be a positive number, got {value:g}")


def _renewal(duration: float, gap: Callable[[], float]) -> list[float]:
    """Arrival times of a renewal process with independent ``gap()`` draws, up to ``duration``."""
    out: list[float] = []
    t = gap()
    while t < duration:
        out.append(t)
        t += gap()
    return out


@dataclass(frozen=True)
class Poisson:
    """Exponential gaps of mean ``1 / rate`` (memoryless; the gaps' CV is 1), drawn by inversion,
    ``-ln(1 - u) / rate``, so they depend on ``random()`` alone."""

    rate: float

    def __post_init__(self) -> None:
        _positive(self.rate, "the rate")

    def times(self, duration: float, rng: random.Random) -> list[float]:
        return _renewal(duration, lambda: -math.log(1.0 - rng.random()) / self.rate)

    def rate_at(self, t: float) -> float:
        return self.rate

    def peak(self) -> float:
        return self.rate

    def describe(self) -> str:
        return f"Poisson at {self.rate:g} req/s"


@dataclass(frozen=True)
class Gamma:
    """Gamma gaps of mean ``1 / rate`` and coefficient of variation ``cv``: shape ``1 / cv^2``, scale
    ``cv^2 / rate``. CV 2 at 2 req/s: shape 0.25, scale 2 s; most gaps are short, some very long, so
    requests come in bursts at the same mean rate. CV 1 is Poisson."""

    rate: float
    cv: float

    def __post_init__(self) -> None:
        _positive(self.rate, "the rate")
        _positive(self.cv, "the coefficient of variation (--cv)")

    def times(self, duration: float, rng: random.Random) -> list[float]:
        shape, scale = 1 / self.cv**2, self.cv**2 / self.rate
        return _renewal(duration, lambda: rng.gammavariate(shape, scale))

    def rate_at(self, t: float) -> float:
        return self.rate

    def peak(self) -> float:
        # Gamma gaps have no peak rate: the mean rate gives the expected count, which is what the cap is for.
        return self.rate

    def describe(self) -> str:
        return f"gamma gaps at {self.rate:g} req/s, CV {self.cv:g}"


def _thinned(arrival: Arrival, peak: float, duration: float, rng: random.Random) -> list[float]:
    """Candidates at the ``peak`` rate, each kept with probability ``rate_at(t) / peak``."""
    return [t for t in Poisson(peak).times(duration, rng) if rng.random() * peak < arrival.rate_at(t)]


@dataclass(frozen=True)
class Diurnal:
    """A non-homogeneous Poisson process whose rate swings around ``rate`` by ``amplitude`` (0 to 1) over
    ``period`` seconds, lowest at 0: ``rate x (1 - amplitude x cos(2 pi t / period))``. 2 req/s,
    amplitude 0.5, period 3,600 s: 1 req/s at 0 and 3,600 s, 3 req/s at 1,800 s, 2 req/s on average."""

    rate: float
    amplitude: float
    period: float

    def __post_init__(self) -> None:
        _positive(self.rate, "the rate")
        _positive(self.period, "the period (--period)")
        if not 0 <= self.amplitude <= 1:
            raise WorkloadError(f"the amplitude (--amplitude) must be between 0 and 1, got {self.amplitude:g}")

    def times(self, duration: float, rng: random.Random) -> list[float]:
        return _thinned(self, self.peak(), duration, rng)

    def rate_at(self, t: float) -> float:
        return self.rate * (1 - self.amplitude * math.cos(2 * math.pi * t / self.period))

    def peak(self) -> float:
        return self.rate * (1 + self.amplitude)

    def describe(self) -> str:
        return (f"diurnal Poisson around {self.rate:g} req/s (amplitude {self.amplitude:g}, period "
                f"{self.period:g} s)")


@dataclass(frozen=True)
class Ramp:
    """A non-homogeneous Poisson process whose rate moves linearly from ``rate`` at 0 to ``rate_end`` at
    ``duration``: 1 to 5 req/s over an hour averages 3 req/s, 10,800 requests expected."""

    rate: float
    rate_end: float
    duration: float

    def __post_init__(self) -> None:
        _positive(self.rate, "the rate")
        _positive(self.rate_end, "the final rate (--rate-end)")
        _positive(self.duration, "the duration")

    def times(self, duration: float, rng: random.Random) -> list[float]:
        return _thinned(self, self.peak(), duration, rng)

    def rate_at(self, t: float) -> float:
        return self.rate + (self.rate_end - self.rate) * min(max(t / self.duration, 0.0), 1.0)

    def peak(self) -> float:
        return max(self.rate, self.rate_end)

    def describe(self) -> str:
        return f"Poisson ramping from {self.rate:g} to {self.rate_end:g} req/s"


# Ten million requests is a day at 116 req/s and about 2 GB as TraceRequest objects (216 bytes each, measured
# with tracemalloc): beyond that a trace is more likely a typo in --rate or --duration than a plan, and
# would exhaust memory before saying so.
MAX_REQUESTS = 10_000_000


@dataclass(frozen=True)
class Generated:
    requests: list[TraceRequest]
    clipped_inputs: int
    clipped_outputs: int


def generate(workload: Workload, arrival: Arrival, duration: float, seed: int,
             max_input: int | None = None, max_output: int | None = None) -> Generated:
    """Requests arriving in ``[0, duration)``. Arrival times and lengths come from two generators seeded
    from ``seed``, so another arrival process keeps the same length sequence. ``max_input`` and
    ``max_output`` clip lengths to an engine's limits (a client's max_tokens, a truncated prompt)."""
    _positive(duration, "the duration")
    for limit, what in ((max_input, "--max-input"), (max_output, "--max-output")):
        if limit is not None and limit < 1:
            raise WorkloadError(f"{what} must be at least 1 token, got {limit}")
    if arrival.peak() * duration > MAX_REQUESTS:
        raise WorkloadError(f"{arrival.describe()} for {duration:,.0f} s is about {arrival.peak() * duration:,.0f} "
                            f"requests, over the {MAX_REQUESTS:,} a trace may hold; lower --rate or --duration")
    times = arrival.times(duration, random.Random(f"{seed}/arrivals"))
    lengths = random.Random(f"{seed}/lengths")
    requests: list[TraceRequest] = []
    clipped_inputs = clipped_outputs = 0
    for t in times:
        prompt = workload.input.tokens(lengths.random())
        answer = workload.output.tokens(lengths.random())
        if max_input is not None and prompt > max_input:
            prompt, clipped_inputs = max_input, clipped_inputs + 1
        if max_output is not None and answer > max_output:
            answer, clipped_outputs = max_output, clipped_outputs + 1
        requests.append(TraceRequest(t, prompt, answer))
    return Generated(requests, clipped_inputs, clipped_outputs)


def write(requests: Sequence[TraceRequest], path: Path) -> None:
    """The generic CSV (``.csv``: seconds, to the microsecond) or JSONL (``.jsonl``: milliseconds, to the
    microsecond), the formats ``trace.load`` reads. It replays from the first request, so a first arrival
    at 0.4 s becomes 0 there."""
    if path.suffix == ".jsonl":
        with path.open("w") as handle:
            for r in requests:
                handle.write(json.dumps({"timestamp": round(r.arrival * 1000, 3), "input_length": r.input_tokens,
                                         "output_length": r.output_tokens}) + "\n")
    elif path.suffix == ".csv":
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(GENERIC_COLUMNS)
            writer.writerows((f"{r.arrival:.6f}", r.input_tokens, r.output_tokens) for r in requests)
    else:
        raise WorkloadError(f"{path}: the output must end in .csv (generic CSV) or .jsonl (JSONL)")


def percentile(values: Sequence[int], q: float) -> float:
    """The ``q`` quantile (0 to 1) by linear interpolation between order statistics."""
    ordered = sorted(values)
    x = q * (len(ordered) - 1)
    lo = math.floor(x)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (x - lo)
