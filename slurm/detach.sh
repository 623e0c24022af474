#!/usr/bin/env bash
# Launch without keeping the terminal: the launcher runs on in the background (setsid + nohup), so a closed SSH
# session loses no job; it submits the sweep, waits for it and closes its MLflow parent run.
#   bash slurm/detach.sh -m hardware=slurm loss=adaptive_margin,infonce
# Prints the launcher's PID and log (under $RETRIEVAL_EXP_LAUNCHER_LOGS, default results/launcher/).
set -euo pipefail
cd "$(dirname "$0")/.."
logs="${RETRIEVAL_EXP_LAUNCHER_LOGS:-results/launcher}"
mkdir -p "$logs"
log="$logs/$(date +%Y-%m-%d_%H-%M-%S)-$$.log"
setsid nohup python launch.py "$@" >"$log" 2>&1 </dev/null &
echo "launcher PID $! (log: $log)"
