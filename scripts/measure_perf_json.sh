#!/usr/bin/env bash
# Thin wrapper: `bitnet-harness benchmark` writing a timestamped JSON receipt into receipts/ (extra arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bitnet-harness benchmark --receipts-dir receipts "$@"
