#!/usr/bin/env bash
# The leaderboard: every method's CPU-sized preset, trained on SciFact train, evaluated on every offline test
# collection (benchmark=offline), with the baselines, then the cross-collection report. Tracking store
# results/mlflow.db, experiment `leaderboard`. SEEDS (default 1,2,3) sets the seeds of the trained rows, run seed by
# seed; the baselines are deterministic and run once. Needs the model cache to hold MiniLM, mpnet and SmolLM2
# (README, 'Offline use'; the seeding script .ci/setup calls takes --models minilm,mpnet,smollm2).
#
# Resumable across machines: each finished row is exported to runs/ (python -m retrieval_exp.study export: one JSON
# record per run, what the report reads but the run files), and a row already there is skipped. Commit runs/ and a
# later `bash study.sh` on another machine runs only what is missing; the report is made from runs/.
#
# Cross-encoders re-rank each collection's top 20 (RERANK_DEPTH): on 2 CPU cores a cross-encoder scores ~50
# pairs/s, and the 1,419 judged queries x 100 would take 47 min per model.
set -euo pipefail
cd "$(dirname "$0")/../.."
seeds="${SEEDS:-1,2,3}"
depth=(benchmark.rerank_depth="${RERANK_DEPTH:-20}" retriever.depth="${RERANK_DEPTH:-20}")
on=(benchmark=offline tracking.experiment=leaderboard)
runs=results/leaderboard/runs
run_id() { grep -o 'MLflow run [0-9a-f]\{32\}' | tail -1 | cut -d' ' -f3; }
have() { python -m retrieval_exp.study has "$runs" "$@" >/dev/null; }
row() {  # one run of the study, unless runs/ holds it; then runs/ gets it
  if have "$@"; then echo "leaderboard: have $*" >&2; return; fi
  python launch.py "$@"
  python -m retrieval_exp.study export leaderboard "$runs"
}

# Baselines: BM25 (the DL pools: their shipped BM25 run), SPLADE++ ED (DL pools only), all-MiniLM-L6-v2 as it is.
row experiment=first_stage "${on[@]}"
row experiment=first_stage benchmark=trec_dl benchmark.first_stage=splade_pp_ed tracking.experiment=leaderboard
row experiment=zero_shot "${on[@]}"

teacher=""
for seed in ${seeds//,/ }; do
  # Method 1: self-distillation with adaptive relevance margins, and its InfoNCE baseline.
  for loss in adaptive_margin infonce; do row experiment=self_distill/scifact loss="$loss" seed="$seed" "${on[@]}"; done
  # Method 3: hybrid KD from all-mpnet-base-v2, on all pairs and on the top 20% (selective distillation).
  for kept in 0 80; do
    row experiment=hybrid_kd/scifact data.train.selection.percentile="$kept" seed="$seed" "${on[@]}"
  done
  # Method 4: Revela and its REPLUG baseline, frozen SmolLM2-135M-Instruct as the LM.
  for loss in revela replug; do row experiment=revela/scifact loss="$loss" seed="$seed" "${on[@]}"; done
  # Method 2: Rank-DistiLLM stage 1 (listwise InfoNCE), then stage 2 (RankNet) from this seed's stage 1, distilling
  # all-MiniLM-L6-v2's ranking of the training queries (the LLM teacher is not available offline). Stage 2 starts
  # from stage 1's run id, which runs/ does not keep: both run here unless runs/ holds stage 2.
  stage2=(experiment=rank_distillm/scifact_stage2 seed="$seed" "${depth[@]}" "${on[@]}")
  if have "${stage2[@]}"; then continue; fi
  teacher=${teacher:-$(python launch.py experiment=rank_distillm/teacher_run tracking.experiment=leaderboard_teacher \
    2>&1 | run_id)}
  stage1=$(python launch.py experiment=rank_distillm/scifact seed="$seed" "${depth[@]}" "${on[@]}" 2>&1 \
    | tee -a /dev/stderr | run_id)
  row "${stage2[@]}" init="$stage1" data.train.first_stage.path="$teacher"
done

python -m retrieval_exp.report "$runs" --baseline zero_shot --across seed init data.train.first_stage.path \
  --measures nDCG@10 R@100 --out results/leaderboard/report
