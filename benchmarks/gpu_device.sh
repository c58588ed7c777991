#!/usr/bin/env bash
# The suite's GPU row on the device machine: streamed tokens/s through three relays and a `tp-node --engine
# llama` vs llama-cpp-python directly, on a random-weight model of a real model's shape (default: 1B).
#
# On your machine, from the project root (fills the git-ignored .gpu/, see shared/gpu/README.md):
#     bash ../shared/gpu/prepare.sh
# Then one device call with carry [".gpu"] and the command (the commit: `git rev-parse HEAD` here, as the
# copy on the device has no git history):
#     TP_BENCH_COMMIT=HEX bash benchmarks/gpu_device.sh
# It builds llama-cpp-python with CUDA (~5 min), writes /tmp/model.gguf (~40 s), runs the row (~1 min)
# and writes $OUT/bench-results.json. MODEL=8b picks the 8B shape; extra arguments go to the suite.
set -euo pipefail
MODEL="${MODEL:-1b}" bash .gpu/device.sh
export PYTHONPATH="/tmp/site:$PWD"
python3 -m benchmarks.suite --only gpu --model /tmp/model.gguf --out "${OUT:-.}/bench-results.json" "$@"
