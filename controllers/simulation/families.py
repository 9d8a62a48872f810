"""Generated traffic: families of traces the autoscaler was not tuned on, each reproducible from a seed.

A family is a rate shape (requests/s over time) and a length mix (prompt and output tokens per request).
Arrivals are a non-homogeneous Poisson process drawn by thinning, so two seeds of one family share the
shape and differ in every arrival and length.

Shapes, for a run of ``minutes`` at a base rate ``rate``:

- ``constant``: ``rate`` throughout.
- ``step``: ``rate``, then 4x for the middle third, then ``rate`` again.
- ``ramp``: from ``rate`` up to 4x, linearly, over the whole run.
- ``bursts``: on/off bursts on a slow trend: 45 s at 6x the trend every 4 minutes, 0.5x between,
  the trend rising from ``rate`` to 2x.
- ``diurnal``: a day compressed into the run: ``rate`` x (1 + 0.7 sin) around the mean, lowest at the
  start, highest at mid-run.

Length mixes:

- ``chat``: prompt and output log-normal (medians 800 and 180 tokens, sigma 1.0 and 0.8): a generic
  chat mix, not fitted to either Azure trace.
- ``long-context``: prompts from the ServeGen DeepSeek-R1 production input distribution (p50 208, p99
  23,423, max 57,284 tokens; ``../shared/calibration/hopper-blackwell-moe.md``) with a tenth of the
  requests drawn from its top percent, up to the engine's input limit; outputs as chat.
- ``reasoning``: outputs from the same source's reasoning-output distribution (p50 792, p90 3,432,
  p99 12,607, max 32,768 tokens), prompts from its input distribution (capped at 8,192).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from controllers.simulation.trace import TraceRequest

Shape = Callable[[float, float], float]  # (seconds, run length) -> rate multiplier

# (quantile, tokens), ServeGen data/reason/deepseek-r1 aggregate, as tabulated in
# shared/calibration/hopper-blackwell-moe.md ("Output lengths of reasoning workloads").
SERVEGEN_INPUT = ((0.0, 1), (0.10, 18), (0.25, 41), (0.50, 208), (0.75, 482), (0.90, 2092), (0.95, 6714),
                  (0.99, 23423), (1.0, 57284))
SERVEGEN_OUTPUT = ((0.0, 16), (0.10, 287), (0.25, 427), (0.50, 792), (0.75, 1499), (0.90, 3432),
                   (0.95, 5701), (0.99, 12607), (1.0, 32768))


def _step(t: float, length: float) -> float:
    return 4.0 if length / 3 <= t < 2 * length / 3 else 1.0


def _ramp(t: float, length: float) -> float:
    return 1.0 + 3.0 * t / length


def _bursts(t: float, length: float) -> float:
    trend = 1.0 + t / length
    return trend * (6.0 if t % 240 < 45 else 0.5)


def _diurnal(t: float, length: float) -> float:
    return 1.0 - 0.7 * math.cos(2 * math.pi * t / length)


SHAPES: dict[str, Shape] = {"constant": lambda t, length: 1.0, "step": _step, "ramp": _ramp,
                            "bursts": _bursts, "diurnal": _diurnal}
PEAK_FACTOR = {"constant": 1.0, "step": 4.0, "ramp": 4.0, "bursts": 12.0, "diurnal": 1.7}
MIXES = ("chat", "long-context", "reasoning")
BURSTY = {"step", "bursts"}  # the benchmark's bursty goal applies to these shapes


def _quantile_draw(rng: random.Random, table: tuple[tuple[float, int], ...], low: float = 0.0) -> int:
    """Inverse CDF, log-linear between the tabulated quantiles; ``low`` restricts to the upper tail."""
    u = low + (1 - low) * rng.random()
    qs = [q for q, _ in table]
    i = max(1, bisect.bisect_left(qs, u))
    (q0, v0), (q1, v1) = table[i - 1], table[i]
    share = (u - q0) / (q1 - q0) if q1 > q0 else 0.0
    return max(1, round(math.exp(math.log(v0) + share * (math.log(v1) - math.log(v0)))))


def _lognormal(rng: random.Random, median: float, sigma: float, cap: int) -> int:
    return max(1, min(cap, round(median * math.exp(sigma * rng.gauss(0, 1)))))


@dataclass(frozen=True)
class Family:
    shape: str
    mix: str = "chat"

    @property
    def name(self) -> str:
        return self.shape if self.mix == "chat" else f"{self.shape}+{self.mix}"

    def lengths(self, rng: random.Random, max_input: int, max_output: int) -> tuple[int, int]:
        if self.mix == "reasoning":
            return (min(8192, max_input, _quantile_draw(rng, SERVEGEN_INPUT)),
                    min(max_output, _quantile_draw(rng, SERVEGEN_OUTPUT)))
        output = _lognormal(rng, 180, 0.8, max_output)
        if self.mix == "long-context":
            tail = rng.random() < 0.1
            return min(max_input, _quantile_draw(rng, SERVEGEN_INPUT, 0.99 if tail else 0.0)), output
        return _lognormal(rng, 800, 1.0, max_input), output

    def generate(self, rate: float, minutes: float, seed: int, max_input: int = 8192,
                 max_output: int = 4096) -> list[TraceRequest]:
        """Arrivals at ``rate`` x the shape's multiplier (thinning against its peak), with lengths."""
        if self.shape not in SHAPES or self.mix not in MIXES:
            raise ValueError(f"unknown family {self.name!r}: shapes {sorted(SHAPES)}, mixes {list(MIXES)}")
        rng = random.Random(f"{self.name}/{seed}")
        shape, length = SHAPES[self.shape], minutes * 60
        peak = rate * PEAK_FACTOR[self.shape]
        out: list[TraceRequest] = []
        t = 0.0
        while True:
            t += rng.expovariate(peak)
            if t >= length:
                return out
            if rng.random() * peak <= rate * shape(t, length):
                out.append(TraceRequest(t, *self.lengths(rng, max_input, max_output)))


def family(name: str) -> Family:
    """``step``, ``bursts+long-context``: a shape, optionally with a length mix after ``+``."""
    shape, _, mix = name.partition("+")
    result = Family(shape, mix or "chat")
    if result.shape not in SHAPES or result.mix not in MIXES:
        raise ValueError(f"unknown family {name!r}: shapes {sorted(SHAPES)}, mixes {list(MIXES)}")
    return result


def mean_output_tokens(fam: Family, samples: int = 4000) -> float:
    """The mix's mean output length, by sampling (for sizing a base rate from replica capacity)."""
    rng = random.Random(f"mean/{fam.mix}")
    return sum(fam.lengths(rng, 8192, 4096)[1] for _ in range(samples)) / samples
