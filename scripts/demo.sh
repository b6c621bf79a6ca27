#!/usr/bin/env bash
# The whole project on this machine, on the embedded synthetic demo data:
#   synthetic fer2013-format CSV -> Beam preprocessing (DirectRunner) -> training on CPU
#   -> evaluation on the test split -> exported SavedModel and .keras.
#   bash scripts/demo.sh [OUTPUT_DIR]      (default: demo_output/)
# With the VGGFace2 weights (DEMO_WEIGHTS=/path/file.h5, the Keras cache, or a download that
# answers within 10 s) it runs the mission's recipe at 224 px (configs/recipes/demo_pretrained.cfg);
# without them, a from-scratch recipe at 48 px (configs/recipes/demo.cfg).
# DEMO_ROWS and DEMO_EPOCHS shorten the run (tests), DEMO_SEED sets the trainer's --seed (the
# accuracy's spread over seeds); the defaults are the README's demo.
source "$(dirname "$0")/venv.sh"
out="${1:-demo_output}"
rows="${DEMO_ROWS:-3000}"
mkdir -p "$out"
export TF_CPP_MIN_LOG_LEVEL=2

# A file the user named that cannot be used stops the demo with find_weights' reason; the
# search of the cache and the download stays quiet.
if [ -n "${DEMO_WEIGHTS:-}" ]; then
  weights=$(python scripts/find_weights.py "$DEMO_WEIGHTS" --timeout 10)
else
  weights=$(python scripts/find_weights.py --timeout 10 2>/dev/null)
fi
if [ -n "$weights" ]; then
  recipe="pretrained VGGFace2 weights ($weights), 224 px, cached features"
  size=224; config=configs/recipes/demo_pretrained.cfg; weights_flag=(--weights "$weights")
else
  echo "VGGFace2 weights not found (no DEMO_WEIGHTS, no cached file, no download): running the from-scratch demo (48 px, random weights)."
  recipe="random weights, 48 px, the whole network trains"
  size=48; config=configs/recipes/demo.cfg; weights_flag=()
fi
run_flags=(${DEMO_EPOCHS:+--epochs="$DEMO_EPOCHS"} ${DEMO_SEED:+--seed="$DEMO_SEED"})

echo "== 1/3 Synthetic fer2013-format CSV ($rows rows) -> $out/fer2013_synthetic.csv"
python -m beam_preprocess.synthetic --rows "$rows" --output "$out/fer2013_synthetic.csv" --seed 0

echo "== 2/3 Beam preprocessing at $size px -> $out/records"
python -m beam_preprocess --input "$out/fer2013_synthetic.csv" --output_dir "$out/records" \
    --image_size "$size" --num_shards 8 --num_eval_shards 2 --runner DirectRunner

echo "== 3/3 Training ($recipe), evaluation and export -> $out/job"
python -m trainer --flagfile="$config" --flagfile=configs/hardware/cpu.cfg \
    "${weights_flag[@]}" "${run_flags[@]}" \
    --data_dir "$out/records" --job_dir "$out/job"

python - "$out" <<'PY'
import json, sys
out = sys.argv[1]
metrics = json.load(open(f"{out}/job/eval/metrics.json"))
print(f"""
Demo finished.
  records + manifest:  {out}/records/ (class chart: {out}/records/class_distribution.png)
  checkpoints, logs:   {out}/job/checkpoints/, {out}/job/logs/
  evaluation:          {out}/job/eval/metrics.json, {out}/job/eval/confusion_matrix.png
  exported models:     {out}/job/model/, {out}/job/export/model.keras
  test accuracy:       {metrics['accuracy']:.3f} on {metrics.get('records', '?')} synthetic test faces
Try it on a photo: python -m trainer.predict --model {out}/job/model PHOTO.jpg
This model has seen only synthetic cartoon faces: its answers on real photos mean little.
For a real one: fer2013.csv from Kaggle (docs/preprocessing.md), the VGGFace2 weights
(docs/network.md) and configs/recipes/fer2013.cfg.""")
PY
