"""Valid, verifiable receipts with chosen raw samples, dates and commits, for archive/compare/history tests.

Built on tests/receipt_factory.py: the repetitions are replaced and everything derived from them (summaries,
throughput, kernel counts, bandwidth ratio, digest) is recomputed, so each receipt passes every gate.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import typer
from typer.testing import CliRunner

from engine.errors import EngineError
from harness.commands import archive, benchmark, compare, history
from harness.errors import HarnessError
from harness.receipts.digest import finalize
from harness.receipts.files import utc_timestamp, write_receipt
from harness.receipts.summary import decode_tokens_per_second, percentiles
from tests.receipt_factory import MODEL, OUTPUT_IDS, PROMPT_IDS, raw_receipt, simulate_counts

STEPS = len(OUTPUT_IDS) - 1  # decode steps per repetition (the first token comes from the prefill)
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def speeds(
    tok_s: Sequence[float], prefill_s: Sequence[float] | None = None, ttft_s: Sequence[float] | None = None
) -> list[dict[str, Any]]:
    """Repetitions decoding at exactly tok_s[i] (equal per-token latencies); prefill/TTFT seconds given or
    fixed at 10/11 ms."""
    n = len(tok_s)
    pre = prefill_s if prefill_s is not None else [0.01] * n
    first = ttft_s if ttft_s is not None else [0.011] * n
    return [
        {"decode": [1.0 / v] * STEPS, "prefill": p, "ttft": t}
        for v, p, t in zip(tok_s, pre, first, strict=True)
    ]


def noisy(center: float, n: int, spread: float, seed: int) -> list[float]:
    """n speeds around `center` with a relative uniform spread (seeded)."""
    rng = np.random.default_rng(seed)
    return [float(center * (1 + spread * u)) for u in rng.uniform(-1, 1, n)]


def bench_receipt(
    reps: Sequence[dict[str, Any]],
    *,
    when: datetime | None = None,
    commit: str | None = COMMIT,
    edit: Callable[[dict[str, Any]], object] | None = None,
) -> dict[str, Any]:
    """A finalized receipt with these repetitions (each {"decode": [STEPS seconds], "prefill", "ttft"})."""
    r = raw_receipt()
    digest = r["output_digest"]["sha256"]
    rows = [
        {
            "prefill_seconds": float(rep["prefill"]),
            "ttft_seconds": float(rep["ttft"]),
            # never exactly equal, as real timers are: the verifier refuses repeated samples
            "decode_seconds": [float(s) + 1e-12 * (i * STEPS + j) for j, s in enumerate(rep["decode"])],
            "tokens_generated": len(OUTPUT_IDS),
            "output_sha256": digest,
        }
        for i, rep in enumerate(reps)
    ]
    tps = decode_tokens_per_second(rows)
    bench = r["phases"]["benchmark"]
    bench["repetitions"] = rows
    bench["summary"] = {
        "prefill_seconds": percentiles([x["prefill_seconds"] for x in rows]),
        "ttft_seconds": percentiles([x["ttft_seconds"] for x in rows]),
        "decode_latency_seconds": percentiles([s for x in rows for s in x["decode_seconds"]]),
        "tokens_per_second": tps,
    }
    r["tokens_per_second"] = tps
    del r["phases"]["timing"]  # chosen speeds need not agree with the factory's timing phase
    r["kernel_counts"] = simulate_counts(MODEL, len(PROMPT_IDS), [len(x["decode_seconds"]) for x in rows])
    r["kernels"] = sorted(r["kernel_counts"])
    r["bandwidth"]["ratio_to_floor"] = tps / r["bandwidth"]["decode_floor_tok_s"]
    r["harness"]["git_commit"] = commit
    if when is not None:
        r["started_at"] = utc_timestamp(when - timedelta(seconds=5))
        r["timestamp"] = utc_timestamp(when)
    if edit is not None:
        edit(r)
    return finalize(r)


def day(d: int, hour: int = 12) -> datetime:
    return datetime(2025, 1, d, hour, tzinfo=timezone.utc)


def write(folder: Path, receipt: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_receipt(receipt, folder)


def write_raw(path: Path, receipt: dict[str, Any]) -> Path:
    """Write a receipt under any name (no schema or digest check), e.g. to test refusals."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(receipt))
    return path


def fresh_app() -> typer.Typer:
    """A new typer app with the archive, compare, history and phase commands, as harness.cli adds them."""
    app = typer.Typer(pretty_exceptions_enable=False)

    @app.callback()
    def _root() -> None:
        """Test root."""

    for command in (archive, compare, history, benchmark):
        command.register(app)
    return app


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def invoke(app: typer.Typer, args: Sequence[str], env: dict[str, str] | None = None) -> Outcome:
    """Run a command as harness.cli.main does: a HarnessError/EngineError is one `error:` line and exit 2.
    `env` adds environment variables for the call."""
    result = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})
    if isinstance(result.exception, HarnessError | EngineError):
        return Outcome(2, result.stdout, f"error: {result.exception}")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr)
