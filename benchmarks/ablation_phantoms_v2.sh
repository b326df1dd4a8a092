#!/usr/bin/env bash
# Ablation of issue 20 (what each change to the training phantoms buys on the real case): the bundled demo
# model fine-tuned with the same budget, the same seeds and split, on
#   v2p   phantoms v2 with plain (v1-like) lesions, no randomisation      -> "neighbours only"
#   v2pr  the same + domain randomisation                                -> "+ randomisation"
#   v2r   phantoms v2 with their lesion kinds + domain randomisation      -> "+ lesion appearances"
# (and optionally v1, the old phantoms, as the control: ARMS="v1 v2p v2pr v2r").
# The arms run at once (one GPU holds the small networks easily; the CPU cores build the datasets and run the
# augmentation), each through benchmarks/train_demo_model_gpu.sh candidate A, then one table compares them
# with the starting model on held-out phantoms v1 and v2 and, where ../shared/data/real exists, on
# IRCADb 1.17 (fast mode; measuring only, never used for training or for choosing settings).
#
#     DEVICE=cuda TIME_LIMIT=4 WORK=/tmp/ablation bash benchmarks/ablation_phantoms_v2.sh
#
# Each arm writes $WORK/<arm>/A/model; the final comparison is $WORK/ablation.txt (+ comparison.json), packed
# into $PACK (default $OUT, the device tool's output folder) when set. Not run on the CPU-only machines of
# branch h20 (it needs about 20 minutes of a GPU machine with 16 cores); see the README's phantoms section.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-scratch/ablation_v2}
DEVICE=${DEVICE:-cuda}
TIME_LIMIT=${TIME_LIMIT:-4}
ARMS=${ARMS:-v2p v2pr v2r}
INIT=${INIT:-resources/models/demo/fold_0/checkpoint_final.pth}
N=$(echo $ARMS | wc -w)
NPROC=$(nproc 2>/dev/null || echo 4)
DA=${DA:-$(( (NPROC - 1) / N > 1 ? (NPROC - 1) / N : 1 ))}
mkdir -p "$WORK"
declare -A PIDS
for arm in $ARMS; do
  DATA=$arm WORK="$WORK/$arm" DEVICE="$DEVICE" TIME_LIMIT="$TIME_LIMIT" CANDIDATES=A DA="$DA" PROC=1 EVAL=0 PACK= OUT= \
    INIT="$INIT" bash benchmarks/train_demo_model_gpu.sh > "$WORK/$arm.log" 2>&1 &
  PIDS[$arm]=$!
done
for arm in $ARMS; do wait "${PIDS[$arm]}"; echo "arm $arm exit $?"; done
MODELS=(--model "start=$(dirname "$(dirname "$INIT")")")
for arm in $ARMS; do
  [ -d "$WORK/$arm/A/model" ] && MODELS+=(--model "$arm=$WORK/$arm/A/model")
done
"$PY" benchmarks/evaluate_phantoms_v2.py "${MODELS[@]}" --device "$DEVICE" --out "$WORK" 2>&1 \
  | grep -v -E '\[[#-]{30}\]' | tee "$WORK/ablation.txt"
PACK=${PACK:-${OUT:-}}
if [ -n "$PACK" ]; then
  mkdir -p "$PACK"
  cp "$WORK/ablation.txt" "$WORK/comparison.json" "$PACK/" 2>/dev/null
  for arm in $ARMS; do
    [ -d "$WORK/$arm/A/model" ] && tar -C "$WORK/$arm/A" -czf "$PACK/$arm.tgz" model
    tr '\r' '\n' < "$WORK/$arm/A.log" 2>/dev/null | grep -v -E '\[[#-]{30}\]' | gzip > "$PACK/$arm.log.gz"
  done
fi
