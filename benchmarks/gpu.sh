#!/usr/bin/env bash
# Every benchmark on the lent GPU in one command (about 6-8 minutes on an H100), for a session with a device:
#
#   here:        ../shared/tools/device-wheels            # open_clip, diffusers, ftfy -> .whl/ (git-ignored)
#   device run:  command "bash benchmarks/gpu.sh", carry [".whl"], timeout_s 595 (see the order below)
#
# Each script prints its own table (the studio against its reference in the same run); the tables go to stdout
# and, on the device machine, to $OUT/gpu-benchmarks.txt. One failing script does not stop the others.
set -uo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH="$PWD:/tmp/site"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
log="${OUT:-benchmarks}/gpu-benchmarks.txt"
: > "$log"
run() {  # run NAME LIMIT_SECONDS CMD...
  local name=$1 limit=$2; shift 2
  echo "=== $name: $*" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  echo "=== $name exit ${PIPESTATUS[0]}" | tee -a "$log"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$log"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$log"
# The open issues' targets first (StyleCLIP, the index, batch runs, Lens), then the rest: the limits sum to 840 s,
# more than one device call may run (595 s), so a cut run still has the figures that are asked for.
run styleclip 130 python3 benchmarks/styleclip.py --device cuda --size 1024
run lens-index 60 python3 benchmarks/lens_index.py --device cuda --images 4096 --batch 256 --sizes 100000
run batch 120 python3 benchmarks/batch.py --device cuda --clip ViT-B-32/random --items 8 --steps 50 --batch 2,4
run lens-video-detect 120 python3 benchmarks/lens.py --device cuda --seconds 30 --scenes 20 --full
run render 60 python3 benchmarks/render.py --device cuda
run scorer 60 python3 benchmarks/scorer.py --device cuda
run sketch 140 python3 benchmarks/sketch.py --device cuda --full
run text2image 80 python3 benchmarks/text2image.py --device cuda --model sd-turbo
run text2image-25-steps 40 python3 benchmarks/text2image.py --device cuda --model sd-turbo --steps 25 \
  --batches 1 --repeats 3 --refine-steps 0
run modconv 30 python3 benchmarks/modconv.py --device cuda --size 1024
