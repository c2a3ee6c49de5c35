#!/usr/bin/env bash
# The GPU check of the study's workload in one command (<= 8 minutes on one H200): EAP-IG time and
# peak memory at the 0.5B, 1.5B and Qwen3-8B shapes in bf16, the largest batch that fits, generation
# tokens/s with and without an intervention, CUDA scores against CPU scores. Prints one table and
# writes gpu_check.json (--json FILE to change). --dry runs it on the CPU with tiny shapes.
# See benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec timeout 480 "${HEADDB_PYTHON:-.venv/bin/python}" benchmarks/gpu_check.py "$@"
