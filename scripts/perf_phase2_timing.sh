#!/usr/bin/env bash
# Thin wrapper: `bitnet-harness timing` (phase 2, per-token latency),
# its receipt written into receipts/ (or $RECEIPTS_DIR). Extra arguments pass through, e.g. --preset tiny or
# --model FILE. It runs in the caller's folder, so relative paths (--model, RECEIPTS_DIR) are the caller's.
set -euo pipefail
exec bitnet-harness timing --receipts-dir "${RECEIPTS_DIR:-receipts}" "$@"
