#!/usr/bin/env bash
# The Rank-DistiLLM SciFact study, end to end on CPU (about an hour on 2 cores): stage 1, a teacher ranking of the
# training queries, stage 2 with RankNet and with ADR-MSE, and the teacher itself re-ranking the test queries.
# Each step's MLflow run id feeds the next (tracking store: results/mlflow.db, experiment rank_distillm_scifact).
set -euo pipefail
cd "$(dirname "$0")/../.."
run_id() { grep -o 'MLflow run [0-9a-f]\{32\}' | tail -1 | cut -d' ' -f3; }

stage1=$(python launch.py experiment=rank_distillm/scifact | tee /dev/stderr | run_id)
teacher=$(python launch.py experiment=rank_distillm/teacher_run | tee /dev/stderr | run_id)
python launch.py -m experiment=rank_distillm/scifact_stage2 init="$stage1" data.train.first_stage.path="$teacher" \
  loss=ranknet,adr_mse
python launch.py experiment=rank_distillm/teacher_run data.test=beir/scifact/test
echo "stage 1: $stage1  teacher run: $teacher"
