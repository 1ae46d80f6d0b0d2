#!/usr/bin/env bash
# Thin wrapper: `bitnet-harness benchmark` writing a timestamped JSON record into receipts/ (or $RECEIPTS_DIR).
# Extra arguments pass through, e.g. --preset tiny or --model FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bitnet-harness benchmark --receipts-dir "${RECEIPTS_DIR:-receipts}" "$@"
