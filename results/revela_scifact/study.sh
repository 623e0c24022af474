#!/usr/bin/env bash
# The Revela SciFact study on CPU (about an hour on 2 cores): the all-MiniLM-L6-v2 retriever before training, then
# trained 40 steps by Revela and by REPLUG on the same 16-chunk groups of SciFact's corpus, with a frozen
# SmolLM2-135M-Instruct as the LM; each evaluated on SciFact test (tracking store results/mlflow.db, experiment
# revela_scifact). Extra arguments go to every run (e.g. model=revela_smollm2 for the SmolLM2-retriever row).
set -euo pipefail
cd "$(dirname "$0")/../.."
python launch.py experiment=revela/scifact train=false method=before "$@"
python launch.py -m experiment=revela/scifact loss=revela,replug "$@"
