#!/usr/bin/env bash
# The GPU path in a few minutes (see benchmarks/gpu_check.py): run on a machine with a CUDA GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py --out "${1:-runs/gpu_check}"
