#!/usr/bin/env bash
# Thin wrapper: `bitnet-harness probe` (phase 1, the quant probe),
# its receipt written into receipts/ (or $RECEIPTS_DIR). Extra arguments pass through, e.g. --preset tiny or
# --model FILE. It runs in the caller's folder, so relative paths (--model, RECEIPTS_DIR) are the caller's.
set -euo pipefail
exec bitnet-harness probe --receipts-dir "${RECEIPTS_DIR:-receipts}" "$@"
