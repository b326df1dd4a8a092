#!/usr/bin/env bash
# The CPU fine-tune of branch h20 (issue 20): the bundled demo model (INIT) trained further on 50 phantoms v2
# with domain randomisation (seeds 1000-1049, the same seeded 80/20 split as benchmarks/train_demo_model.sh),
# niced and on one torch thread because the 2 cores are shared. It stops on its time budget (TIME_LIMIT
# minutes; the learning rate decays over it); checkpoint_latest.pth is written every epoch, so
# `main.py train ... --continue` resumes it. Then compare it with the starting model:
#     .venv/bin/python benchmarks/evaluate_phantoms_v2.py --model start=resources/models/demo --model new=$WORK/../model
# Seen once on the shared machine: nnU-Net's dataset check (a process pool) hung with one worker waiting on the
# pool's queue lock; `kill -TERM <that worker>` let the run go on (see the README, phantoms v2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=${WORK:-scratch/h20_train/work}
OUTM=${OUTM:-$(dirname "$WORK")/model}
INIT=${INIT:-resources/models/demo/fold_0/checkpoint_final.pth}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$WORK"
[ -f "$(dirname "$WORK")/init.pth" ] || cp "$INIT" "$(dirname "$WORK")/init.pth"
exec nice -n 10 "$PY" main.py train --work-dir "$WORK" \
  --phantoms 50 --phantom-seed 1000 --phantom-shape 96 128 128 --phantom-spacing 2.5 2.5 2.5 \
  --phantom-version 2 --randomise --randomise-seed 0 \
  --dataset-id 920 --dataset-name LiverPlanPhantomsV2R --test-fraction 0.2 --split-seed 0 \
  --configuration 3d_small --patch 64 64 64 --features 8 16 32 64 96 --batch-size 2 \
  --device cpu --epochs 1000 --iterations 25 --val-iterations 2 --lr 0.01 \
  --threads 1 --da-processes 1 --processes 1 --time-limit "${TIME_LIMIT:-50}" --oversample 0.5 \
  --init-weights "$(dirname "$WORK")/init.pth" --export "$OUTM" --no-evaluate \
  --demo --model-name "LiverPlan demo (synthetic phantoms)" --model-version 0.4 \
  --training-data "40 synthetic LiverPlan phantoms v2 with domain randomisation (engine.phantom_v2 + engine.training.randomise, seeds 1000-1049 minus the 10 held out, rand seed 0), 2.5 mm, 96x128x128; no patient data" "$@"
