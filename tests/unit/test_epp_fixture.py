"""The endpoint picker's exposition fixture is the cited families exactly (names, types, HELP, label names,
buckets of controllers/metrics/epp.py), and its double grows counters per scrape and keeps gauges."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from controllers.metrics import epp
from tests.support.epp import FIXTURE, render


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_the_fixture_serves_each_read_family_as_cited() -> None:
    served = families(FIXTURE.read_text())
    assert set(served) == {f.name for f in epp.READ}
    for family in epp.READ:
        got = served[family.name]
        assert (got.type, got.documentation) == (family.type, family.help)
        samples = got.samples
        names = {k for s in samples for k in s.labels if k != "le"}
        assert names == set(family.labels), family.name
        if family.buckets:
            bounds = [float(s.labels["le"]) for s in samples if s.name.endswith("_bucket")]
            assert bounds == [*map(float, family.buckets), float("inf")], family.name


def test_the_double_grows_counters_by_the_scrape_and_keeps_gauges() -> None:
    text = FIXTURE.read_text()
    first, third = families(render(text, 1)), families(render(text, 3))

    def value(fams: dict[str, Any], family: str, sample: str, **labels: str) -> float:
        return next(s.value for s in fams[family].samples
                    if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))

    ttft = epp.TTFT.name
    assert value(third, ttft, f"{ttft}_count") == 3 * value(first, ttft, f"{ttft}_count") == 300
    assert value(third, ttft, f"{ttft}_bucket", le="0.2") == 270
    queue = epp.FLOW_CONTROL_QUEUE.name
    assert value(third, queue, queue, fairness_id="default") == value(first, queue, queue, fairness_id="default") == 6
