#!/bin/bash
# GPO on OpinionQA at the paper's scale (32 episodes of 10-100 + 10-100 questions a step) on
# one GPU: experiments/gpo_recipes.py runs side by side, one per recipe, since one run does
# not fill the GPU. Embeddings come precomputed (`gpo embed`), so the GPU machine needs no
# LLM weights; score the runs afterwards with experiments/score_runs.py.
#
#   gpo embed --dataset opinionqa --data-dir ../shared/data/opinionqa --model smollm2 \
#       --out opinionqa_smollm2.npz                      # where the LLM is
#   DATA_DIR=data EMBEDDINGS=opinionqa_smollm2.npz bash experiments/gpu_opinionqa.sh
#
# LIMIT (seconds, 0 = none) stops every run at a wall-clock limit; kept checkpoints remain.
set -u
: "${DATA_DIR:?folder holding opinionqa/}" "${EMBEDDINGS:?gpo embed file of OpinionQA}"
STEPS=${STEPS:-3000}; LIMIT=${LIMIT:-0}; SEEDS=${SEEDS:-"0 1 2"}; RUNS=${RUNS:-runs/gpu}
EMBEDDER=${EMBEDDER:-smollm2}  # the model the EMBEDDINGS file was made with
LOGS=${LOGS:-logs}; RECIPES=${RECIPES:-"A_nll_lr3e-4 A_kl_lr3e-4 A_nll_lr1e-3 B_nll_lr3e-4"}
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
mkdir -p "$LOGS"

declare -A ARGS=(
  [A_nll_lr3e-4]="--protocols A"
  [A_kl_lr3e-4]="--protocols A --set train.loss=kl"
  [A_nll_lr1e-3]="--protocols A --set train.learning_rate=1e-3"
  [B_nll_lr3e-4]="--protocols B"
)
for recipe in $RECIPES; do
  (timeout "$LIMIT" python experiments/gpo_recipes.py --data-dir "$DATA_DIR" \
     --embeddings "$EMBEDDINGS" --embedder "$EMBEDDER" --variants paper --steps "$STEPS" --ks 5 10 20 50 \
     --seeds $SEEDS ${ARGS[$recipe]} --runs "$RUNS/$recipe" \
     --out "$RUNS/$recipe/report.json" > "$LOGS/gpu_$recipe.log" 2>&1
   echo "$recipe: exit $? after ${SECONDS}s") &
done
wait
