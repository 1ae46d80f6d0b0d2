#!/usr/bin/env bash
# Build the llama-cpp-python wheel for the `parity` extra from its PyPI source distribution (llama.cpp is
# vendored inside it; nothing else is downloaded), CPU only, into the cache folder that .ci/run installs from.
# About 15-25 minutes on 2 cores; run it once per machine. Usage: scripts/build_parity_wheel.sh [pip]
set -euo pipefail
pip_cmd="${1:-pip}"
version="${LLAMA_CPP_PYTHON_VERSION:-0.3.16}" # vendors a llama.cpp with the bitnet arch, TQ1_0 and TQ2_0
wheels="${BITNET_PARITY_WHEELS:-$HOME/.cache/bitnet-harness/wheels}"
mkdir -p "$wheels"
if ls "$wheels"/llama_cpp_python-"$version"-*.whl >/dev/null 2>&1; then
    echo "already built: $(ls "$wheels"/llama_cpp_python-"$version"-*.whl)"
    exit 0
fi
# Only the shared libraries the Python package loads: no CURL, server, tools, examples, tests or llava.
export CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF \
-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
nice -n 10 "$pip_cmd" wheel --no-deps --no-binary llama-cpp-python "llama-cpp-python==$version" -w "$wheels"
ls -l "$wheels"/llama_cpp_python-"$version"-*.whl
