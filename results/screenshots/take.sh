#!/usr/bin/env bash
# Screenshots of the MLflow UI for the README: the runs page and a side-by-side comparison of a sweep's runs.
#   bash results/screenshots/take.sh [STORE_URI] [EXPERIMENT]     (needs Debian's chromium)
set -euo pipefail
store=${1:-sqlite:///results/mlflow.db}
experiment=${2:-hybrid_kd_scifact}
here=$(cd "$(dirname "$0")" && pwd)
mlflow ui --backend-store-uri "$store" --host 127.0.0.1 --port 5055 > /dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
until curl -sf http://127.0.0.1:5055/health > /dev/null; do sleep 1; done
read -r experiment_id runs < <(python - "$store" "$experiment" <<'PY'
import json, sys, urllib.parse
from mlflow.tracking import MlflowClient
client = MlflowClient(sys.argv[1])
found = client.get_experiment_by_name(sys.argv[2])
children = [r.info.run_id for r in client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])
            if "sweep_id" in r.data.tags and "sweep_parent" not in r.data.tags]
print(found.experiment_id, urllib.parse.quote(json.dumps(children)))
PY
)
shoot() {
    chromium --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --virtual-time-budget=15000 --window-size="$1" \
        --screenshot="$here/$2" "$3" 2> /dev/null
}
shoot 1600,1000 mlflow_runs.png "http://127.0.0.1:5055/#/experiments/$experiment_id/runs"
shoot 1900,1300 mlflow_compare.png "http://127.0.0.1:5055/#/compare-runs?runs=$runs&experiments=%5B%22$experiment_id%22%5D"
