#!/usr/bin/env bash
# Stop the loopback cluster slurm/start.sh started, by the PIDs it recorded (munged only when started from here).
#   bash slurm/stop.sh [STATE_DIR] [--clean]    --clean also deletes the state (jobs, accounting database)
set -euo pipefail
state="${1:-${RETRIEVAL_EXP_SLURM_STATE:-/tmp/retrieval_exp_slurm}}"
for pidfile in slurmd slurmctld slurmdbd mysql/mariadb munge/munged; do
    file="$state/$pidfile.pid"
    [ -f "$file" ] || continue
    pid="$(cat "$file")"
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
    rm -f "$file"
done
if [ "${2:-}" = "--clean" ]; then rm -rf "$state"; fi
