#!/bin/bash
# GPO on OpinionQA at the paper's scale (32 episodes of 10-100 + 10-100 questions a step) on
# one GPU: experiments/opinionqa.py runs side by side, one per recipe (or split), since one
# run does not fill the GPU. Embeddings come precomputed (`gpo embed`), so the GPU machine
# needs no LLM weights; score the runs afterwards with experiments/score_runs.py.
#
#   gpo embed --dataset opinionqa --data-dir ../shared/data/opinionqa --model smollm2 \
#       --out opinionqa_smollm2.npz                      # where the LLM is
#   DATA_DIR=data EMBEDDINGS=opinionqa_smollm2.npz bash experiments/gpu_opinionqa.sh
#
# Session 4 ran these commands on an H200 from a throwaway harness that this script replaces:
# all four recipes under a 420 s limit (split 0 of each finished), then splits 1 and 2 of
# A_nll_lr3e-4 side by side under 300 s (the same as RECIPES=A_nll_lr3e-4 SEEDS=1 and SEEDS=2,
# each with its own LOGS).
set -u
: "${DATA_DIR:?folder holding opinionqa/}" "${EMBEDDINGS:?gpo embed file of OpinionQA}"
STEPS=${STEPS:-3000}; LIMIT=${LIMIT:-0}; SEEDS=${SEEDS:-"0 1 2"}; RUNS=${RUNS:-runs/gpu}
LOGS=${LOGS:-logs}; RECIPES=${RECIPES:-"A_nll_lr3e-4 A_kl_lr3e-4 A_nll_lr1e-3 B_nll_lr3e-4"}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
mkdir -p "$LOGS"

declare -A ARGS=(
  [A_nll_lr3e-4]="--protocols A --learning-rate 3e-4"
  [A_kl_lr3e-4]="--protocols A --learning-rate 3e-4 --loss kl"
  [A_nll_lr1e-3]="--protocols A --learning-rate 1e-3"
  [B_nll_lr3e-4]="--protocols B --learning-rate 3e-4"
)
for recipe in $RECIPES; do
  (timeout "$LIMIT" python experiments/opinionqa.py --data-dir "$DATA_DIR" \
     --embeddings "$EMBEDDINGS" --steps "$STEPS" --batch-size 32 \
     --questions-per-episode 10 100 --seeds $SEEDS ${ARGS[$recipe]} \
     --runs "$RUNS/$recipe" --out "$RUNS/$recipe/report.json" \
     > "$LOGS/gpu_$recipe.log" 2>&1
   echo "$recipe: exit $? after ${SECONDS}s") &
done
wait
