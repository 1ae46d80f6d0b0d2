"""JUnit XML (the Jenkins / Ant format CI systems read) for `verify-receipt --junit` and `compare --junit`.

verify-receipt: one test case per gate (its class names the gate's level of assurance); a failed gate is a
<failure> whose message says what was expected and what was found (every finding in the text), a gate that was
not checked is <skipped> with the reason, a warning passes with its findings as output, and an unusable
receipt is a single test case with an <error>. compare: a `comparability` case (a <failure> listing
the reasons when the pair is refused), then one case per metric: a regression is a <failure>, an inconclusive
or unjudged metric is <skipped>, an improvement or no change passes. Built with junitparser.
"""

from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped, TestCase, TestSuite

from engine.atomic import atomic_write
from harness.comparison.compare import Comparison
from harness.comparison.stats import Verdict
from harness.reporting.gates import FAIL, NOT_CHECKED, WARN, GateRecord

VERIFY_CLASS = "bitnet-harness.verify-receipt"
COMPARE_CLASS = "bitnet-harness.compare"


def _suite(name: str, cases: list[TestCase], properties: dict[str, str]) -> JUnitXml:
    suite = TestSuite(name)
    for key, value in properties.items():
        suite.add_property(key, value)
    suite.add_testcases(cases)
    xml = JUnitXml(name)
    xml.add_testsuite(suite)
    xml.update_statistics()
    return xml


def verification_junit(location: str, records: list[GateRecord], valid: bool) -> JUnitXml:
    """One test case per gate of a receipt's verification."""
    cases = []
    for record in records:
        case = TestCase(record.name, f"{VERIFY_CLASS}.{record.level}" if record.level else VERIFY_CLASS, 0.0)
        if record.status == FAIL:
            first = record.findings[0]
            failure = Failure(f"expected {first.expected}; found {first.found}", record.name)
            failure.text = "\n".join(finding.line() for finding in record.findings)
            case.result = [failure]
        elif record.status == NOT_CHECKED:
            case.result = [Skipped(f"not checked: {record.note}")]
        elif record.status == WARN:  # the receipt stays valid; its speed is marked unreliable
            case.system_out = "\n".join(f"warning: {finding.line()}" for finding in record.findings)
        cases.append(case)
    return _suite(f"verify-receipt {location}", cases, {"receipt": location, "valid": str(valid).lower()})


def unusable_junit(location: str, message: str) -> JUnitXml:
    """A receipt that could not be checked at all: one test case with the error."""
    case = TestCase("receipt", VERIFY_CLASS, 0.0)
    case.result = [Error(message, "unusable input")]
    return _suite(f"verify-receipt {location}", [case], {"receipt": location, "valid": "unknown"})


def _interval(low: float | None, high: float | None) -> str:
    return f"[{low:.4f}, {high:.4f}]" if low is not None and high is not None else "none"


def comparison_junit(comp: Comparison) -> JUnitXml:
    """A `comparability` case, then one case per judged metric."""
    gate = TestCase("comparability", COMPARE_CLASS, 0.0)
    reasons = "\n".join(f"{r.key}: {r.message}" for r in comp.reasons)
    if comp.refused:
        failure = Failure(f"not comparable: {', '.join(r.key for r in comp.reasons)}", "not comparable")
        failure.text = reasons
        gate.result = [failure]
    elif comp.reasons:
        gate.result = [Skipped(f"compared anyway (--force); not comparable: {reasons}")]
    cases = [gate]
    for row in comp.rows:
        j, m = row.judgement, row.metric
        case = TestCase(m.label, COMPARE_CLASS, 0.0)
        detail = (
            f"{m.statistic_name} BASE {j.base:.6g} NEW {j.new:.6g} {m.unit} (n {j.n_base}/{j.n_new}); "
            f"NEW/BASE {j.ratio:.4f}, 95% CI {_interval(j.ci_low, j.ci_high)}, "
            f"p {'none' if j.p_value is None else f'{j.p_value:.3g}'}; threshold {comp.threshold * 100:g} %"
        )
        if j.note:
            detail += f"; {j.note}"
        if j.verdict == Verdict.REGRESSION:
            failure = Failure(f"regression: {detail}", "regression")
            failure.text = detail
            case.result = [failure]
        elif j.verdict in (Verdict.INCONCLUSIVE, Verdict.NOT_JUDGED):
            case.result = [Skipped(f"{j.verdict.value}: {detail}")]
        else:
            case.system_out = f"{j.verdict.value}: {detail}"
        cases.append(case)
    properties = {
        "base": comp.base_label,
        "new": comp.new_label,
        "verdict": comp.overall,
        "exit_code": str(comp.exit_code),
    }
    if comp.geomean is not None:
        properties["geomean_speed_up"] = f"{comp.geomean:.6g}"
    return _suite("compare", cases, properties)


def write_junit(xml: JUnitXml, path: Path) -> None:
    """Write the XML atomically (readers never see half a file)."""
    with atomic_write(path) as fh:
        xml.write(fh, pretty=True)
