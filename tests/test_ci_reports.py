"""What CI reads: JUnit XML from `verify-receipt --junit` and `compare --junit`, validated against the JUnit
schema (tests/schemas/junit.xsd) and read back with junitparser; markdown job summaries appended to
`$GITHUB_STEP_SUMMARY` or `--summary-md FILE` by `verify-receipt`, `compare` and `benchmark`.
"""

import json
import os
from pathlib import Path

import pytest
import typer
from junitparser import Error, Failure, JUnitXml, Skipped

from harness.commands import archive as archive_cmd
from harness.commands import benchmark, compare, report, verify_receipt
from harness.receipts.verify import verify
from tests.archive_factory import bench_receipt, day, invoke, noisy, speeds, write, write_raw

xmlschema = pytest.importorskip("xmlschema", reason="JUnit validation needs xmlschema (the test extra)")
JUNIT_XSD = xmlschema.XMLSchema(str(Path(__file__).parent / "schemas" / "junit.xsd"))


def _app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """Test root."""

    for command in (verify_receipt, compare, benchmark, report, archive_cmd):
        command.register(app)
    return app


APP = _app()


def _junit(path: Path) -> JUnitXml:
    """The file, after it validates against the JUnit schema, as junitparser reads it."""
    JUNIT_XSD.validate(str(path))
    return JUnitXml.fromfile(str(path))


def _cases(xml: JUnitXml) -> dict[str, object]:
    (suite,) = list(xml)
    return {case.name: case for case in suite}


# ---------------------------------------------------------------- verify-receipt --junit
def test_verify_receipt_junit_has_one_case_per_gate(tmp_path: Path) -> None:
    receipt = bench_receipt(speeds([100.0] * 3), when=day(1))
    path = write(tmp_path / "r", receipt)
    out = tmp_path / "verify.xml"
    res = invoke(APP, ["verify-receipt", "--path", path, "--junit", out])
    assert res.code == 0, res.stderr
    xml = _junit(out)
    cases = _cases(xml)
    result = verify(receipt)
    assert set(cases) == {g.name for g in result.gates}
    assert all(case.is_passed for name, case in cases.items() if name in result.passed)
    assert cases["throughput"].classname == "bitnet-harness.verify-receipt.self-consistent"
    for name in ("model_binding", "replay", "signature"):  # not asked for: not checked, with the reason
        (skipped,) = cases[name].result
        assert isinstance(skipped, Skipped) and skipped.message.startswith("not checked: ")
    (suite,) = list(xml)
    assert (suite.tests, suite.failures, suite.errors) == (len(cases), 0, 0)
    assert suite.skipped == len(result.not_checked)


def test_failed_gates_are_failures_with_expected_and_found(tmp_path: Path) -> None:
    receipt = bench_receipt(speeds([100.0] * 3), when=day(1))
    receipt["tokens_per_second"] *= 3  # throughput and content digest now fail
    path = write_raw(tmp_path / "edited.json", receipt)
    out = tmp_path / "verify.xml"
    res = invoke(APP, ["verify-receipt", "--path", path, "--junit", out])
    assert res.code == 1
    cases = _cases(_junit(out))
    failures = verify(receipt).failures
    assert {f.name for f in failures} == {
        name for name, c in cases.items() if not c.is_passed and not c.is_skipped
    }
    for gate in ("throughput", "checksum"):
        (failure,) = cases[gate].result
        first = next(f for f in failures if f.name == gate)
        assert isinstance(failure, Failure)
        assert failure.message == f"expected {first.expected}; found {first.found}"
        assert first.problems[0].action in failure.text


def test_an_unusable_receipt_is_one_error_case(tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("[1, 2]")
    out = tmp_path / "verify.xml"
    assert invoke(APP, ["verify-receipt", "--path", junk, "--junit", out]).code == 2
    (case,) = _cases(_junit(out)).values()
    (error,) = case.result
    assert isinstance(error, Error) and "not an object" in error.message


def test_junit_into_a_missing_folder_fails_before_any_work(tmp_path: Path) -> None:
    path = write(tmp_path / "r", bench_receipt(speeds([100.0] * 3), when=day(1)))
    res = invoke(APP, ["verify-receipt", "--path", path, "--junit", tmp_path / "nowhere" / "v.xml"])
    assert res.code == 2 and "does not exist" in res.stderr


# ---------------------------------------------------------------- compare --junit
def _pair(
    tmp_path: Path, base: list[float], new: list[float], **new_speeds: list[float]
) -> tuple[Path, Path]:
    b = write(tmp_path / "base", bench_receipt(speeds(base), when=day(1)))
    n = write(tmp_path / "new", bench_receipt(speeds(new, **new_speeds), when=day(2)))
    return b, n


def test_compare_junit_one_case_per_metric(tmp_path: Path) -> None:
    b, n = _pair(tmp_path, noisy(100, 6, 0.01, 1), noisy(70, 6, 0.01, 2))
    out = tmp_path / "compare.xml"
    res = invoke(APP, ["compare", b, n, "--junit", out, "--format", "json"])
    assert res.code == 1
    rows = json.loads(res.stdout)["rows"]
    cases = _cases(_junit(out))
    assert list(cases) == ["comparability", *(r["metric"] for r in rows if r["verdict"] is not None)]
    assert cases["comparability"].is_passed
    (failure,) = cases["decode tok/s"].result
    assert isinstance(failure, Failure) and failure.type == "regression"
    assert "95% CI [" in failure.message and "threshold 5 %" in failure.message


def test_compare_junit_refused_and_inconclusive(tmp_path: Path) -> None:
    b = write(tmp_path / "b", bench_receipt(speeds([100.0] * 3), when=day(1)))
    n = write(
        tmp_path / "n", bench_receipt(speeds([100.0] * 3), when=day(2), edit=lambda r: r.update(seed=9))
    )
    out = tmp_path / "refused.xml"
    assert invoke(APP, ["compare", b, n, "--junit", out]).code == 2
    cases = _cases(_junit(out))
    (failure,) = cases["comparability"].result
    assert list(cases) == ["comparability"] and "workload" in failure.message
    b2, n2 = _pair(tmp_path / "few", [100.0, 101.0], [98.0, 99.0])  # 2 vs 2 repetitions: too few
    out2 = tmp_path / "inconclusive.xml"
    assert invoke(APP, ["compare", b2, n2, "--junit", out2]).code == 3
    (skipped,) = _cases(_junit(out2))["prefill tok/s"].result  # one sample per repetition cannot decide
    assert isinstance(skipped, Skipped) and skipped.message.startswith("inconclusive")


# ---------------------------------------------------------------- job summaries
def test_verify_receipt_appends_to_the_step_summary(tmp_path: Path) -> None:
    path = write(tmp_path / "r", bench_receipt(speeds([100.0, 110.0, 120.0]), when=day(1)))
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    for _ in range(2):
        res = invoke(APP, ["verify-receipt", "--path", path], env=env)
        assert res.code == 0
    text = summary.read_text()
    assert text.startswith("earlier step\n") and text.count("### verify-receipt") == 2
    assert "VALID (self-consistent" in text
    # decode speed over every step, its band the p10-p90 of the seeded block bootstrap (docs/comparison.md)
    assert "| decode tok/s ↑ | 109.4 (steps/s) | 103.1 – 116.5 | 9 |" in text
    assert "| evidence: model_binding | not checked |" in text


def test_summary_md_and_the_step_summary_both_get_it(tmp_path: Path) -> None:
    path = write(tmp_path / "r", bench_receipt(speeds([100.0] * 3), when=day(1)))
    explicit, step = tmp_path / "mine.md", tmp_path / "step.md"
    res = invoke(
        APP,
        ["verify-receipt", "--path", path, "--summary-md", explicit],
        env={"GITHUB_STEP_SUMMARY": str(step)},
    )
    assert res.code == 0 and explicit.read_text() == step.read_text() != ""
    missing = invoke(APP, ["verify-receipt", "--path", path, "--summary-md", tmp_path / "no" / "s.md"])
    assert missing.code == 2 and "does not exist" in missing.stderr


def test_compare_summary_puts_regressions_first(tmp_path: Path) -> None:
    same = noisy(100, 6, 0.001, 1)
    b, n = _pair(tmp_path, same, same, ttft_s=noisy(0.02, 6, 0.01, 3))  # only time to first token worsens
    summary = tmp_path / "s.md"
    res = invoke(APP, ["compare", b, n, "--summary-md", summary])
    assert res.code == 1
    text = summary.read_text()
    assert "**Verdict: regression**" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[0].startswith("| time to first token ↓") and rows[0].rstrip(" |").endswith("regression")
    assert rows[1].startswith("| ") and "regression" not in rows[1]


@pytest.mark.slow
def test_benchmark_writes_its_summary_when_github_step_summary_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BITNET_HARNESS_CACHE", str(tmp_path / "cache"))
    summary = tmp_path / "step_summary.md"
    args = ["benchmark", "--preset", "tiny", "--threads", "1", "--tokens", "8", "--prompt-tokens", "4"]
    args += [
        "--repetitions",
        "3",
        "--no-probe",
        "--no-timing",
        "--no-bandwidth",
        "--receipts-dir",
        tmp_path / "r",
    ]
    res = invoke(APP, [*args, "--json"], env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert res.code == 0, res.stderr
    out = json.loads(res.stdout)
    text = summary.read_text()
    assert text.startswith("### bitnet-harness benchmark: verified")
    assert out["path"] in text and "decode tok/s ↑" in text and "noise band p10-p90" in text
    decode = [line for line in text.splitlines() if line.startswith("| decode tok/s")]
    assert decode and decode[0].endswith("| 21 |")  # every decode step of the 3 repetitions (7 each)
    assert os.path.basename(out["path"]) in text


def test_a_bad_signature_is_a_failed_signature_case(tmp_path: Path) -> None:
    from harness.receipts.signing import generate_keypair, load_private_key, sign_receipt_file

    path = write(tmp_path / "r", bench_receipt(speeds([100.0] * 3), when=day(1)))
    key, public = generate_keypair(tmp_path / "key")
    sign_receipt_file(path, load_private_key(key))
    path.write_bytes(path.read_bytes().replace(b'"seed": 0', b'"seed": 1'))  # changed after signing
    out = tmp_path / "verify.xml"
    args = ["verify-receipt", "--path", path, "--public-key", public, "--junit", out]
    assert invoke(APP, args).code == 1
    (failure,) = _cases(_junit(out))["signature"].result
    assert isinstance(failure, Failure)
