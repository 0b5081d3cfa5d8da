"""deploy/prometheus/alerts.yml: `promtool check rules` and the unit tests in alerts.test.yml
(`promtool test rules`: each plan threshold fires just above and stays silent just below and
without traffic), and every metric the rules use is one that shared/axiom_shared/metrics.py
defines.

promtool comes from Debian's `prometheus` package; deploy/scripts/ensure-promtool.sh installs it
(`make test` and .ci/run call it). Missing, these tests fail: they never skip.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from prometheus_client.metrics import MetricWrapperBase

from axiom_shared import metrics
from tests.deploy.checks import DEPLOY, load_yaml_documents

RULES_DIR = DEPLOY / "prometheus"
PLAN_THRESHOLDS = {
    "AxiomPaymentFailureRateHigh": "> 0.05",
    "AxiomApiLatencyHigh": "> 2",
    "AxiomRateLimitRejectionsHigh": "> 0.10",
    "AxiomWebhookFailuresHigh": "> 0.01",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH: run deploy/scripts/ensure-promtool.sh "
            "(apt-get install prometheus) before the tests",
            pytrace=False,
        )
    return path


def run(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args],
        cwd=RULES_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_rules_are_valid(promtool: str) -> None:
    result = run(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rule_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _rules() -> list[dict[str, object]]:
    (doc,) = load_yaml_documents(RULES_DIR / "alerts.yml")
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_plan_thresholds_and_required_fields() -> None:
    rules = {str(rule["alert"]): rule for rule in _rules()}
    for name, threshold in PLAN_THRESHOLDS.items():
        assert threshold in str(rules[name]["expr"]), name
    for name, rule in rules.items():
        assert "for" in rule, name
        labels = rule["labels"]
        assert isinstance(labels, dict)
        assert labels["severity"] in ("warning", "critical"), name
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations.get("summary"), name
        assert annotations.get("description"), name


def test_every_ratio_is_guarded_against_no_traffic() -> None:
    for rule in _rules():
        expr = str(rule["expr"])
        if " / " in expr or "histogram_quantile" in expr:
            assert re.search(r"\band\b[\s\S]*> 0\s*$", expr), rule["alert"]


def test_rules_use_only_metrics_that_exist() -> None:
    defined = {
        family.name
        for value in vars(metrics).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    }
    suffixes = ("", "_total", "_bucket", "_count", "_sum")
    used = set()
    for rule in _rules():
        used |= set(re.findall(r"\baxiom_[a-z_]+", str(rule["expr"])))
    assert used, "the rules use no axiom_ metric"
    unknown = {
        name for name in used if not any(name == base + sfx for base in defined for sfx in suffixes)
    }
    assert unknown == set()
