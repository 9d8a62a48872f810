"""The rule files under the real promtool: `check rules` on each, and every unit-test file of
dashboards/rules/tests (alerts firing and staying quiet, recorded outputs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from controllers.metrics.rules import RULES_DIR
from tests.support.prometheus import promtool

TESTS = sorted((RULES_DIR / "tests").glob("*_test.yaml"))


@pytest.mark.parametrize("path", [RULES_DIR / "recording.yaml", RULES_DIR / "alerts.yaml"], ids=lambda p: p.name)
def test_the_rule_files_pass_promtool_check(path: Path) -> None:
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("path", TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path: Path) -> None:
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    # The harness can fail: the same test with one expected value changed is reported as a failure.
    text = (RULES_DIR / "tests" / "operator_test.yaml").read_text().replace(
        "rule_files: [../recording.yaml, ../alerts.yaml]",
        f"rule_files: [{RULES_DIR / 'recording.yaml'}, {RULES_DIR / 'alerts.yaml'}]")
    wrong = tmp_path / "wrong_test.yaml"
    wrong.write_text(text.replace('"10 reconciles failed', '"11 reconciles failed'))
    result = promtool("test", "rules", str(wrong))
    assert result.returncode != 0 and "11 reconciles failed" in result.stdout + result.stderr
