"""One genuine receipt per test session, made by the real benchmark on the tiny preset and signed; the
forgeries are edits of it. Each test records what the verifier did with its lie in the ledger, which
scripts/forgery_table.py turns into docs/verification.md's table (set FORGERY_LEDGER to a JSON path)."""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from harness.cli import app
from harness.receipts.files import load_receipt
from harness.receipts.signing import envelope_path, generate_keypair
from harness.session.benchmark import run_benchmark_session
from harness.session.request import BenchmarkRequest

LEDGER_ENV = "FORGERY_LEDGER"


@dataclass(frozen=True)
class Genuine:
    path: Path
    receipt: dict[str, Any]
    envelope: Path
    public_key: Path
    forger_key: Path


@pytest.fixture(scope="session")
def genuine(tmp_path_factory: pytest.TempPathFactory) -> Genuine:
    """`benchmark --preset tiny --kernel tl1 --sign-key KEY` run once: probe, timing, bandwidth, benchmark."""
    base = tmp_path_factory.mktemp("genuine")
    os.environ["BITNET_HARNESS_CACHE"] = str(base / "cache")
    private, public = generate_keypair(base / "ci-key")
    forger_private, _ = generate_keypair(base / "forger-key")
    request = BenchmarkRequest(
        preset="tiny",
        kernel="tl1",
        tokens=16,
        prompt_tokens=8,
        repetitions=2,
        receipts_dir=base / "receipts",
        sign_key=private,
    )
    outcome = run_benchmark_session(request)
    (written,) = outcome.receipts
    assert written.verification.ok, written.verification.lines()
    return Genuine(
        written.path, load_receipt(written.path), envelope_path(written.path), public, forger_private
    )


@dataclass(frozen=True)
class Verdict:
    code: int
    data: dict[str, Any]

    def status(self, gate: str) -> str:
        """The gate's status ("fail" for each of several named "a, b"); "-" when the verifier gave no gate
        results (unusable input) or no gate is meant (`none`: the verdict line says it all)."""
        found = {g["name"]: g["status"] for g in self.data.get("gates", ())}
        statuses = {found.get(name.strip(), "-") for name in gate.split(",")}
        return statuses.pop() if len(statuses) == 1 else "mixed"

    def reason(self, gate: str) -> str:
        return next((g["reason"] for g in self.data.get("gates", ()) if g["name"] == gate), "")

    def busy_remeasure(self) -> bool:
        """--remeasure found this host busy (other processes, steal, load) and so proved nothing."""
        return self.status("remeasure") == "not_checked" and "busy while re-measuring" in self.reason(
            "remeasure"
        )

    @property
    def text(self) -> str:
        return self.data.get("verdict") or f"error: {self.data.get('error')}"


def run_verifier(path: Path, *flags: str | Path) -> Verdict:
    result = CliRunner().invoke(app, ["verify-receipt", "--path", str(path), "--json", *map(str, flags)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return Verdict(result.exit_code, json.loads(result.stdout))


class Ledger:
    """What each forgery test measured: the lie, the level and flags, the gate, the exit code, the verdict."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def record(self, lie: str, flags: tuple[str, ...], gate: str, verdict: Verdict) -> None:
        status = verdict.status(gate)
        level = "attested" if "--public-key" in flags else "evidence" if flags else "self-consistent"
        shown = [f for f in flags if not str(f).startswith("/")]
        self.rows.append(
            {
                "lie": lie,
                "level": level,
                "flags": " ".join(map(str, shown)),
                "gate": gate,
                "status": status,
                "exit": verdict.code,
                "verdict": verdict.text,
            }
        )


@pytest.fixture(scope="session")
def ledger() -> Ledger:
    book = Ledger()
    yield book
    target = os.environ.get(LEDGER_ENV)
    if target:
        Path(target).write_text(json.dumps(book.rows, indent=2))
