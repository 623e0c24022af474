#!/usr/bin/env bash
# The in-batch ablation on NFCorpus (about an hour on 2 CPU cores): all-MiniLM-L6-v2 before training, then InfoNCE
# on the same 3,072 NFCorpus train triples at batch 64 (48 steps) and at batch 512 through the gradient cache (6
# steps, chunks of 64), each with and without masking false in-batch negatives; every run evaluated on NFCorpus test
# (tracking store results/mlflow.db, experiment in_batch_nfcorpus). Extra arguments go to every run.
set -euo pipefail
cd "$(dirname "$0")/../.."
python launch.py experiment=in_batch/nfcorpus train=false method=before "$@"
python launch.py -m experiment=in_batch/nfcorpus loss.mask_false_negatives=true,false "$@"
python launch.py -m experiment=in_batch/nfcorpus loss.mask_false_negatives=true,false \
    trainer.batch_size=512 trainer.max_steps=6 trainer.cache_chunk=64 "$@"
