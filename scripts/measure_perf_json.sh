#!/usr/bin/env bash
# Thin wrapper: `bitnet-harness benchmark` (the full benchmark),
# its receipt written into receipts/ (or $RECEIPTS_DIR). Extra arguments pass through, e.g. --preset tiny or
# --model FILE. It runs in the caller's folder, so relative paths (--model, RECEIPTS_DIR) are the caller's.
set -euo pipefail
exec bitnet-harness benchmark --receipts-dir "${RECEIPTS_DIR:-receipts}" "$@"
