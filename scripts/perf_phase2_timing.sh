#!/usr/bin/env bash
# Thin wrapper: `bitnet-harness timing` writing a timestamped JSON record into receipts/ (or $RECEIPTS_DIR).
# Extra arguments pass through, e.g. --preset tiny or --model FILE.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bitnet-harness timing --receipts-dir "${RECEIPTS_DIR:-receipts}" "$@"
