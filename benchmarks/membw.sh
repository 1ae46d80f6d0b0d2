#!/bin/sh
# Build benchmarks/membw.c and run the read-bandwidth matrix: 1 and 2 threads, buffers of 0.3-4 GiB, 4 KiB
# and huge pages. One JSON line per run on stdout. Usage: benchmarks/membw.sh [passes]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin="${TMPDIR:-/tmp}/membw-$(id -u)"
cc -O2 -mavx2 -pthread -o "$bin" "$here/membw.c"
passes="${1:-9}"
for gib in 0.3 1 2 4; do
  for threads in 1 2; do
    "$bin" --threads "$threads" --gib "$gib" --passes "$passes"
    "$bin" --threads "$threads" --gib "$gib" --passes "$passes" --huge
  done
done
