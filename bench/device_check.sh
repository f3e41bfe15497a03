#!/usr/bin/env bash
# GPU checks for a lent GPU machine (CI never has one): correctness tests, then throughput.
#
#   bash bench/device_check.sh            # results land in $OUT (the device tool) or bench/results
#
# Expects the GPU machine's own python3 with torch; packages it lacks travel as wheels in .whl/
# (scikit-survival, OpenSlide, the EfficientNet weights) and a finished run's fold-0 inputs and
# block candidates in .gpu/run (see bench/bench_gpu_parity.py). Each step runs even if one fails.
set -uo pipefail
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 BENCH_RESULTS="$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
python3 -c "import torch, sklearn, sksurv, openslide; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'sksurv', sksurv.__version__)"
status=0
python3 -m pytest tests/test_gpu.py -q -p no:cacheprovider 2>&1 | tee "$OUT/test_gpu.log" || status=1
python3 bench/bench_training.py --device cuda --epochs 3 >/dev/null || status=1
python3 bench/bench_embed.py --slide-size 12288 9216 --patches 1024 --batch-size 128 --workers 8 >/dev/null || status=1
python3 bench/bench_embed.py --slide-size 12288 9216 --patches 2048 --batch-size 128 --workers 8 --encoders uni virchow2 h_optimus_0 --result embedding_foundation >/dev/null || status=1
[ -d .gpu/run ] && { python3 bench/bench_gpu_parity.py .gpu/run --fold 0 --device cuda >/dev/null || status=1; }
ls -la "$OUT"
exit $status
