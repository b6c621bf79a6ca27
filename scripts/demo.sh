#!/usr/bin/env bash
# The whole project on this machine, on the embedded synthetic demo data:
#   synthetic fer2013-format CSV -> Beam preprocessing (DirectRunner) -> training on CPU
#   -> evaluation on the test split -> exported SavedModel and .keras.
#   bash scripts/demo.sh [OUTPUT_DIR]      (default: demo_output/)
source "$(dirname "$0")/venv.sh"
out="${1:-demo_output}"
rows="${DEMO_ROWS:-6000}"
mkdir -p "$out"
export TF_CPP_MIN_LOG_LEVEL=2

echo "== 1/3 Synthetic fer2013-format CSV ($rows rows) -> $out/fer2013_synthetic.csv"
python -m beam_preprocess.synthetic --rows "$rows" --output "$out/fer2013_synthetic.csv" --seed 0

echo "== 2/3 Beam preprocessing -> $out/records"
python -m beam_preprocess --input "$out/fer2013_synthetic.csv" --output_dir "$out/records" \
    --image_size 48 --num_shards 8 --num_eval_shards 2 --runner DirectRunner

echo "== 3/3 Training, evaluation and export -> $out/job"
python -m trainer --flagfile=configs/demo.cfg --data_dir "$out/records" --job_dir "$out/job"

python - "$out" <<'PY'
import json, sys
out = sys.argv[1]
metrics = json.load(open(f"{out}/job/eval/metrics.json"))
print(f"""
Demo finished.
  records + manifest:  {out}/records/ (class chart: {out}/records/class_distribution.png)
  checkpoints, logs:   {out}/job/checkpoints/, {out}/job/logs/
  evaluation:          {out}/job/eval/metrics.json, {out}/job/eval/confusion_matrix.png
  exported models:     {out}/job/export/saved_model/, {out}/job/export/model.keras
  test accuracy:       {metrics['accuracy']:.3f} on {metrics.get('records', '?')} synthetic test faces
Try it on a photo: python -m trainer.predict --model {out}/job/export/saved_model PHOTO.jpg""")
PY
