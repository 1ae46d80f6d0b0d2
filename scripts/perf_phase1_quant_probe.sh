#!/usr/bin/env bash
# Thin wrapper: `bitnet-harness probe` writing a timestamped JSON receipt into receipts/ (extra arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bitnet-harness probe --receipts-dir receipts "$@"
