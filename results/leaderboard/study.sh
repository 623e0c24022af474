#!/usr/bin/env bash
# The leaderboard: every method's CPU-sized preset, trained on SciFact train, evaluated on every offline test
# collection (benchmark=offline), with the baselines, then the cross-collection report. Tracking store
# results/mlflow.db, experiment `leaderboard`. SEEDS (default 1,2,3) sets the seeds of the trained rows; the
# baselines are deterministic and run once. Needs the model cache to hold MiniLM, mpnet and SmolLM2 (README,
# 'Offline use'; the seeding script .ci/setup calls takes --models minilm,mpnet,smollm2).
# Cross-encoders re-rank each collection's top 20 (RERANK_DEPTH): on 2 CPU cores a cross-encoder scores ~50
# pairs/s, and the 1,419 judged queries x 100 would take 47 min per model.
set -euo pipefail
cd "$(dirname "$0")/../.."
seeds="${SEEDS:-1,2,3}"
depth="${RERANK_DEPTH:-20}"
on=(benchmark=offline tracking.experiment=leaderboard)
run_id() { grep -o 'MLflow run [0-9a-f]\{32\}' | tail -1 | cut -d' ' -f3; }

# Baselines: BM25 (the DL pools: their shipped BM25 run), SPLADE++ ED (DL pools only), all-MiniLM-L6-v2 as it is.
python launch.py experiment=first_stage "${on[@]}"
python launch.py experiment=first_stage benchmark=trec_dl benchmark.first_stage=splade_pp_ed tracking.experiment=leaderboard
python launch.py experiment=zero_shot "${on[@]}"

# Method 1: self-distillation with adaptive relevance margins, and its InfoNCE baseline.
python launch.py -m experiment=self_distill/scifact loss=adaptive_margin,infonce seed="$seeds" "${on[@]}"
# Method 3: hybrid KD from all-mpnet-base-v2, on all pairs and on the top 20% (selective distillation).
python launch.py -m experiment=hybrid_kd/scifact data.train.selection.percentile=0,80 seed="$seeds" "${on[@]}"
# Method 4: Revela and its REPLUG baseline, frozen SmolLM2-135M-Instruct as the LM.
python launch.py -m experiment=revela/scifact loss=revela,replug seed="$seeds" "${on[@]}"
# Method 2: Rank-DistiLLM stage 1 (listwise InfoNCE), then stage 2 (RankNet) from each seed's stage 1, distilling
# all-MiniLM-L6-v2's ranking of the training queries (the LLM teacher is not available offline).
teacher=$(python launch.py experiment=rank_distillm/teacher_run tracking.experiment=leaderboard_teacher | run_id)
for seed in ${seeds//,/ }; do
  stage1=$(python launch.py experiment=rank_distillm/scifact seed="$seed" benchmark.rerank_depth="$depth" \
    retriever.depth="$depth" "${on[@]}" | tee -a /dev/stderr | run_id)
  python launch.py experiment=rank_distillm/scifact_stage2 init="$stage1" data.train.first_stage.path="$teacher" \
    seed="$seed" benchmark.rerank_depth="$depth" retriever.depth="$depth" "${on[@]}"
done

python -m retrieval_exp.report leaderboard --baseline zero_shot --across seed init --out results/leaderboard/report
