"""Run the forgery suite and print docs/verification.md's table rows from what each test measured.

    python scripts/forgery_table.py > /tmp/rows.md

Each row: the lie, the level (and the flags) that catches it, the gate, the gate's status and the exit
code, and the verifier's verdict line, exactly as the run produced them (tests/forgery, FORGERY_LEDGER).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def measure() -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory() as folder:
        ledger = Path(folder) / "ledger.json"
        env = {**os.environ, "FORGERY_LEDGER": str(ledger)}
        suite = str(ROOT / "tests" / "forgery")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", suite]
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not ledger.exists():
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            raise SystemExit(f"the forgery suite failed (exit {done.returncode}); no table")
        return json.loads(ledger.read_text())


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|")


def rows(ledger: list[dict[str, object]]) -> list[str]:
    out = [
        "| lie | level (flags) | gate | measured: status, exit | verdict |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in ledger:
        level = f"{row['level']} ({row['flags']})" if row["flags"] else row["level"]
        verdict = re.sub(r"/\S*/", "", str(row["verdict"]))  # temporary folders say nothing
        out.append(
            f"| {_cell(row['lie'])} | {_cell(level)} | {_cell(row['gate'])} | "
            f"{_cell(row['status'])}, exit {row['exit']} | {_cell(verdict)} |"
        )
    return out


if __name__ == "__main__":
    print("\n".join(rows(measure())))
