#!/usr/bin/env bash
# Train LiverPlan's demo model on a GPU with the project's own pipeline (`main.py train`), two candidates at
# once on one GPU, each evaluated on the same 10 held-out phantoms with the study's table; pick the better.
#
#   A  "finetune": the bundled demo model (features 8-96, 1.1 M parameters, resources/models/demo, or INIT=...)
#      trained further (--init-weights) with patch 64^3, batch 8, foreground oversampling 0.66. v0.3 is this
#      candidate run from v0.2 with TIME_LIMIT=5.5 on an H200.
#   B  "wide": features 16-32-64-128-160 (4.1 M parameters, 16.6 MB), patch 96^3, batch 4, from scratch,
#      oversampling 0.66.
#
# CANDIDATES=A (or B) trains one candidate alone with all augmentation workers (DA defaults to 13 then, 7
# each for two): on a 16-core GPU machine training this small network is augmentation-bound, so one
# candidate alone gets about twice the iterations in the same minutes.
#
# Both use the same 50 phantoms (seeds 1000-1049, 96x128x128 at 2.5 mm) and the same seeded 80/20 split as
# benchmarks/train_demo_model.sh, so their held-out tables compare with v0.2's. They stop on a time budget
# (TIME_LIMIT minutes of training each; the learning rate decays over it).
#
#     DEVICE=cuda TIME_LIMIT=6 WORK=/tmp/demo_gpu bash benchmarks/train_demo_model_gpu.sh
#
# Outputs: $WORK/{A,B}/model (installable packages) and $WORK/{A,B}/evaluation/test/table.md. With PACK=DIR
# (default: $OUT, the device tool's output folder, when set) each candidate is also packed there as
# <c>.tgz (model + evaluation; a run stopped before export packs its newest checkpoint and plans instead)
# and <c>.log.gz (its log without the progress-bar lines): a lent GPU machine
# is bare and goes back after the command, so this is what comes home.
# nnU-Net's torch.compile is switched off (nnUNet_compile=f): on a short budget its compile time is lost.
#
# DATA picks the training phantoms (the same 50 seeds and the same split in each case):
#   DATA=v1   engine.phantom (default; how v0.3 was trained)
#   DATA=v2   engine.phantom_v2: the liver among neighbours of liver-like density, varied livers, lesion kinds
#   DATA=v2r  phantoms v2 + domain randomisation (engine.training.randomise): what issue 20 asks for
#   DATA=v2p  phantoms v2 with plain v1-like lesions (ablation: neighbours only)
#   DATA=v2pr phantoms v2, plain lesions, randomised (ablation: + randomisation)
# e.g.  DATA=v2r DEVICE=cuda TIME_LIMIT=8 CANDIDATES=A bash benchmarks/train_demo_model_gpu.sh
# With EVAL=1 (default) each finished candidate is then compared with the model it started from on the
# held-out phantoms v1 and v2 and, where ../shared/data/real is there, IRCADb 1.17
# (benchmarks/evaluate_phantoms_v2.py); the comparison lands in $WORK/<c>/comparison.txt and the pack.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-scratch/demo_gpu}
DEVICE=${DEVICE:-cuda}
TIME_LIMIT=${TIME_LIMIT:-6}
CANDIDATES=${CANDIDATES:-A B}
case "$CANDIDATES" in A|B) DA=${DA:-13}; PROC=${PROC:-12} ;; *) DA=${DA:-7}; PROC=${PROC:-6} ;; esac
ITERS=${ITERS:-100}
VERSION=${VERSION:-0.4}
INIT=${INIT:-resources/models/demo/fold_0/checkpoint_final.pth}
DATA=${DATA:-v1}
EVAL=${EVAL:-1}
case "$DATA" in
  v1)   PH=(); DSID=900; DSNAME=LiverPlanPhantoms
        TD="40 synthetic LiverPlan phantoms (engine.phantom seeds 1000-1049 minus the 10 held out), 2.5 mm, 96x128x128; no patient data" ;;
  v2)   PH=(--phantom-version 2); DSID=910; DSNAME=LiverPlanPhantomsV2
        TD="40 synthetic LiverPlan phantoms v2 (engine.phantom_v2 seeds 1000-1049 minus the 10 held out), 2.5 mm, 96x128x128; no patient data" ;;
  v2r)  PH=(--phantom-version 2 --randomise); DSID=920; DSNAME=LiverPlanPhantomsV2R
        TD="40 synthetic LiverPlan phantoms v2 with domain randomisation (engine.phantom_v2 + engine.training.randomise, seeds 1000-1049 minus the 10 held out, rand seed 0), 2.5 mm grid, 96x128x128; no patient data" ;;
  v2p)  PH=(--phantom-version 2 --plain-lesions); DSID=911; DSNAME=LiverPlanPhantomsV2Plain
        TD="40 synthetic LiverPlan phantoms v2 with plain lesions (ablation), 2.5 mm, 96x128x128; no patient data" ;;
  v2pr) PH=(--phantom-version 2 --plain-lesions --randomise); DSID=921; DSNAME=LiverPlanPhantomsV2PlainR
        TD="40 synthetic LiverPlan phantoms v2 with plain lesions and domain randomisation (ablation), 2.5 mm grid, 96x128x128; no patient data" ;;
  *) echo "unknown DATA=$DATA (v1, v2, v2r, v2p, v2pr)"; exit 2 ;;
esac
export nnUNet_compile=${nnUNet_compile:-f}
mkdir -p "$WORK"
cp "$INIT" "$WORK/init.pth"   # the finetune starts from the model as it was before this run

COMMON=(--phantoms 50 --phantom-seed 1000 --phantom-shape 96 128 128 --phantom-spacing 2.5 2.5 2.5 "${PH[@]}"
  --dataset-id "$DSID" --dataset-name "$DSNAME" --test-fraction 0.2 --split-seed 0
  --configuration 3d_small --device "$DEVICE" --epochs 1000 --iterations "$ITERS" --val-iterations 10
  --time-limit "$TIME_LIMIT" --oversample 0.66 --threads 2 --da-processes "$DA" --processes "$PROC"
  --demo --model-name "LiverPlan demo (synthetic phantoms)" --model-version "$VERSION"
  --training-data "$TD")

run_a() {
  "$PY" main.py train --work-dir "$WORK/A" "${COMMON[@]}" --patch 64 64 64 --features 8 16 32 64 96 --batch-size 8 \
    --lr 0.01 --init-weights "$WORK/init.pth" --export "$WORK/A/model" \
    --card-command "DATA=$DATA DEVICE=cuda TIME_LIMIT=$TIME_LIMIT CANDIDATES=A bash benchmarks/train_demo_model_gpu.sh (candidate A: the previous demo model trained further on the GPU)" \
    > "$WORK/A.log" 2>&1
}
run_b() {
  "$PY" main.py train --work-dir "$WORK/B" "${COMMON[@]}" --patch 96 96 96 --features 16 32 64 128 160 --batch-size 4 --overwrite \
    --lr 0.01 --export "$WORK/B/model" \
    --card-command "DATA=$DATA DEVICE=cuda TIME_LIMIT=$TIME_LIMIT CANDIDATES=B bash benchmarks/train_demo_model_gpu.sh (candidate B: features 16-160, patch 96^3, from scratch)" \
    > "$WORK/B.log" 2>&1
}
declare -A PIDS
for c in $CANDIDATES; do
  case "$c" in A) run_a & ;; B) run_b & ;; *) echo "unknown candidate $c (A or B)"; exit 2 ;; esac
  PIDS[$c]=$!
done
OK=1
for c in $CANDIDATES; do
  wait "${PIDS[$c]}"; rc=$?
  echo "candidate $c exit $rc"
  [ $rc -eq 0 ] && OK=0
done
for c in $CANDIDATES; do
  echo "== candidate $c: held-out phantoms"
  cat "$WORK/$c/evaluation/test/table.md" 2>/dev/null || tail -20 "$WORK/$c.log"
done
if [ "$EVAL" = 1 ]; then
  for c in $CANDIDATES; do
    [ -d "$WORK/$c/model" ] || continue
    echo "== candidate $c against the model it started from (held-out phantoms v1, v2; IRCADb 1.17 if present)"
    "$PY" benchmarks/evaluate_phantoms_v2.py --model "start=$(dirname "$(dirname "$INIT")")" --model "$c=$WORK/$c/model" \
      --device "$DEVICE" --out "$WORK/$c/evaluation/comparison" 2>&1 | grep -v -E '\[[#-]{30}\]' | tee "$WORK/$c/comparison.txt"
  done
fi
PACK=${PACK:-${OUT:-}}
if [ -n "$PACK" ]; then
  mkdir -p "$PACK"
  for c in $CANDIDATES; do
    parts=()
    for d in model evaluation; do [ -e "$WORK/$c/$d" ] && parts+=("$c/$d"); done
    if [ ! -e "$WORK/$c/model" ]; then   # stopped before export: keep the newest weights and the plans
      while IFS= read -r f; do parts+=("${f#"$WORK/"}"); done < <(find "$WORK/$c/nnUNet_results" \
        \( -name 'checkpoint_latest.pth' -o -name 'checkpoint_final.pth' -o -name 'plans.json' -o -name 'dataset.json' \) 2>/dev/null)
    fi
    [ ${#parts[@]} -gt 0 ] && tar -C "$WORK" -czf "$PACK/$c.tgz" "${parts[@]}"
    [ -f "$WORK/$c.log" ] && tr '\r' '\n' < "$WORK/$c.log" | grep -v -E '\[[#-]{30}\]' | gzip > "$PACK/$c.log.gz"
  done
  echo "packed into $PACK: $(ls "$PACK" | tr '\n' ' ')"
fi
exit $OK
