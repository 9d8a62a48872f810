"""Every PromQL query of the autoscaler's Prometheus source parses under the real promtool."""

from __future__ import annotations

from pathlib import Path

import yaml

from controllers.metrics.prometheus import PrometheusConfig, PrometheusSource
from tests.support.prometheus import promtool


def test_the_autoscaler_queries_are_valid_promql(tmp_path: Path) -> None:
    queries = PrometheusSource(PrometheusConfig(url="http://unused")).queries_for(0.95)
    rules = {"groups": [{"name": "tokenworks-autoscaler", "rules": [
        {"record": f"tokenworks:{signal}", "expr": expr} for signal, expr in queries.items()]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout
