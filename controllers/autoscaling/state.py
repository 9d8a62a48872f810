"""The autoscaler's memory for one ModelDeployment: typed, frozen, versioned.

It is written to ``status.autoscaler.state`` with every changed decision, so a failover resumes from the
current windows instead of forgetting a burst or scaling down early. Every sample carries its time and
every window is trimmed by time, never by a count of ticks, so a 5 s tick and a 60 s tick keep the same
windows. A state that does not parse (another version, hand-edited) is replaced by a fresh one whose
stabilisation history holds the current count: nothing scales down within a window of that.
"""

from __future__ import annotations

import bisect
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

STATE_VERSION: Literal[3] = 3
_set = object.__setattr__  # how pydantic itself sets a frozen model's attributes
Sample = tuple[float, float]  # (time, value)
Growth = tuple[float, float, float]  # (time, demand then in replicas, growth within a lead after it)
Carried = tuple[float, float, float, float]  # (time, ready replicas, output tokens/s, latency pressure) within target
Timed = TypeVar("Timed", Sample, Growth, Carried)


class PolicyState(BaseModel):
    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True, extra="forbid")

    version: Literal[3] = STATE_VERSION
    # What the measured load asked for, per decision (time, replicas): the throughput without its
    # projection, latency and queue, not the headroom nor a hold (``combine``).
    history: tuple[Sample, ...] = ()
    # What the headroom asked for, per calm decision, for one start-up lead: the count falls below it only
    # once it has asked for less for as long as a replica takes to start (``stabilise``).
    headroom: tuple[Sample, ...] = ()
    # Output tokens/s of the stable window, for the trend projected over the start-up lead.
    throughput: tuple[Sample, ...] = ()
    # What the throughput asked for with its trend projected, per decision, for one start-up lead: a
    # projection is a forecast for a lead ahead, so it holds the count that long, not for the whole
    # stabilisation window (``stabilise``).
    projected: tuple[Sample, ...] = ()
    # The count latency held near its target, per decision, for one start-up lead: one comfortable reading
    # (latency noise) does not release the count (``stabilise``).
    held: tuple[Sample, ...] = ()
    # The fewest replicas seen carrying each throughput with latency within target, for an hour: the
    # Pareto front of (replicas, tokens/s, pressure), few entries. Latency near its target holds the count
    # only where no fewer replicas were seen carrying as much at latency as low (``latency_signal``).
    carried: tuple[Carried, ...] = ()
    # Demand in replicas per decision, for the last few minutes: what the growth within a lead is read
    # from.
    demand: tuple[Sample, ...] = ()
    # The highest growth within a lead of each minute of the last hour, with the demand it grew from: what
    # the headroom is learned from (the burst memory).
    growth: tuple[Growth, ...] = ()
    # Mean time to the first token over the short window, for the backlog's growth rate.
    waits: tuple[Sample, ...] = ()
    # Output tokens per completed request, learned while no backlog distorts the token model.
    tokens_per_request: float | None = None
    ready: int = 0  # ready replicas at the last decision
    ready_changed_at: float | None = None  # when that count last changed
    last_backlog: float | None = None  # when requests last queued past the TTFT target
    panic_until: float | None = None
    last_scale_up: float | None = None
    last_decision: float | None = None
    # The first decision, or the first since one at zero pods (their series start then): rate windows
    # are full a window after it.
    watching_since: float | None = None
    idle_since: float | None = None
    capacity_scale: float = 1.0
    capacity_learned_at: float | None = None
    # When latency was first seen over target, with no backlog, at a load under the planned capacity: the
    # evidence a capacity cut needs to see again a tick later (a step in demand shows so for one tick).
    slow_since: float | None = None
    infeasible_since: float | None = None  # latency over target that no count of replicas fixes
    latency_scaled_at: float | None = None  # the last scale-up latency decided, and its pressure then
    latency_pressure: float | None = None

    @classmethod
    def restore(cls, raw: Any, current: int, now: float) -> PolicyState:
        """The state saved in status, or a fresh one that holds ``current`` for a window."""
        if isinstance(raw, PolicyState):
            return raw
        try:
            state = cls.model_validate(raw) if raw else cls()
        except ValidationError:
            state = cls()
        return state.model_copy(update={"history": (*state.history, (now, float(current)))})

    def updated(self, **changes: Any) -> PolicyState:
        """A copy with ``changes``, or this state itself when none changes a field: stages set the same
        value at most decisions, and ``decide`` runs for every ModelDeployment at every tick."""
        fields = self.__dict__
        changed = False
        for name, value in changes.items():
            was = fields[name]  # a KeyError for any name that is no field
            # ``is`` first: a window ``within`` drops nothing from is the same tuple (a full slice of a
            # tuple is the tuple itself), compared in O(1).
            if was is not value and was != value:
                changed = True
        if not changed:
            return self
        # What ``model_copy(update=...)`` does, without its generic copies (0.9 us against 1.5, some six
        # times a decision): the fields are immutable values, there are no extra or private attributes
        # (``extra="forbid"``), and the result is as frozen as this one
        # (tests/unit/test_autoscaling_policy.py).
        new = PolicyState.__new__(PolicyState)
        _set(new, "__dict__", {**fields, **changes})
        _set(new, "__pydantic_fields_set__", self.__pydantic_fields_set__ | changes.keys())
        _set(new, "__pydantic_extra__", None)
        _set(new, "__pydantic_private__", None)
        return new

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


def within(samples: tuple[Timed, ...], now: float, seconds: float) -> tuple[Timed, ...]:
    """The samples of the last ``seconds`` (time-based trimming, whatever the tick); samples are kept in
    time order, so a binary search finds the first to keep."""
    return samples[bisect.bisect_left(samples, (now - seconds,)):]


def per_minute(samples: tuple[Growth, ...], sample: Growth) -> tuple[Growth, ...]:
    """Append a growth sample, keeping one a minute (the highest growth, with the demand it grew from): an
    hour is 60 samples whatever the tick."""
    if samples and int(samples[-1][0] // 60) == int(sample[0] // 60):
        if sample[2] > samples[-1][2]:
            return (*samples[:-1], (samples[-1][0], sample[1], sample[2]))
        return samples
    return (*samples, sample)
