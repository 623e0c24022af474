#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) at paper-like sizes, offline, cut off at 8 minutes: run it on a lent GPU and
# paste its table into bench/README.md. Extra arguments go to the script (e.g. --device cpu --texts 64 for a try).
set -euo pipefail
cd "$(dirname "$0")"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
timeout 480 python gpu_check.py "$@"
