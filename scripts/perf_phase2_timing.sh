#!/usr/bin/env bash
# Thin wrapper: `bitnet-harness timing` writing a timestamped JSON receipt into receipts/ (extra arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bitnet-harness timing --receipts-dir receipts "$@"
