#!/usr/bin/env bash
# The Rank-DistiLLM SciFact study, end to end on CPU (about 40 min on 2 cores): stage 1, a teacher ranking of the
# training queries, stage 2 with RankNet and with ADR-MSE, and the teacher itself re-ranking the test queries.
# Each step's MLflow run id feeds the next (tracking store: results/mlflow.db, experiment rank_distillm_scifact).
# Every evaluation re-ranks BM25's top 50 (the presets' default is 100): on 2 CPU cores a cross-encoder scores
# about 50 pairs/s, and 300 queries x 100 would take 10 min per model. Pass DEPTH=100 for the full protocol.
set -euo pipefail
cd "$(dirname "$0")/../.."
depth="retriever.depth=${DEPTH:-50}"
run_id() { grep -o 'MLflow run [0-9a-f]\{32\}' | tail -1 | cut -d' ' -f3; }

stage1=$(python launch.py experiment=rank_distillm/scifact "$depth" | tee -a /dev/stderr | run_id)
teacher=$(python launch.py experiment=rank_distillm/teacher_run | tee -a /dev/stderr | run_id)
python launch.py -m experiment=rank_distillm/scifact_stage2 init="$stage1" data.train.first_stage.path="$teacher" \
  loss=ranknet,adr_mse "$depth"
python launch.py experiment=rank_distillm/teacher_run data.test=beir/scifact/test "$depth"
echo "stage 1: $stage1  teacher run: $teacher"
