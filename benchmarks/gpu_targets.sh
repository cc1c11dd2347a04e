#!/usr/bin/env bash
# Issue 12's GPU measurements in one call, most important first, within a time budget.
#
#   benchmarks/gpu_targets.sh prepare          # here (network to PyPI): wheels the GPU machine may lack -> .gpu-wheels/
#   benchmarks/gpu_targets.sh [BUDGET_S]       # on the GPU machine (no network): installs them, runs the benches
#   DRY=1 benchmarks/gpu_targets.sh            # the same steps with the tiny shipped configs on CPU (checks the script)
#
# Every bench is `evalkit bench` (random weights at real size, synthetic COCO-sized JPEGs through evalkit's own
# loader and runner, the per-image loop measured in the same process). Each step's JSON goes to $OUT (or
# bench-out/) as STEP.json with its log; a step that would not fit in the remaining budget is skipped and named.
set -u
cd "$(dirname "$0")/.."
WHEELS=.gpu-wheels

if [ "${1:-}" = "prepare" ]; then
  mkdir -p "$WHEELS"
  pip download -q -d "$WHEELS" --no-deps typer rich click shellingham markdown-it-py mdurl pygments accelerate \
    psutil typing-extensions annotated-doc
  for version in 3.10 3.11 3.12 3.13; do  # the GPU machine's Python is not known in advance
    pip download -q -d "$WHEELS" --no-deps --only-binary=:all: --python-version "$version" \
      --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 pillow pyyaml
  done
  du -sh "$WHEELS"
  exit 0
fi

BUDGET=${1:-540}
if [ -n "${DRY:-}" ]; then  # tiny architectures, few samples, CPU: every step runs in seconds
  OPT27=tiny-opt OPT67=tiny-opt T5XL=tiny-t5 T5XXL=tiny-t5 ITM=tiny-itm N=12 IMAGES=16
  SMALL="--device cpu" GEN="--baseline-samples 1 --max-new-tokens 3"
else
  OPT27=blip2-opt-2.7b OPT67=blip2-opt-6.7b T5XL=blip2-flan-t5-xl T5XXL=blip2-flan-t5-xxl ITM=blip2-itm-vit-g
  N=4096 IMAGES=1000 SMALL="" GEN=""
fi
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -c "import typer, rich, accelerate, PIL, yaml" 2>/dev/null || \
  pip install -q --no-index --find-links "$WHEELS" typer rich accelerate pillow pyyaml >"$OUT/pip.log" 2>&1
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__,
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" | tee "$OUT/versions.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv >>"$OUT/versions.txt" 2>&1

step() {  # step NAME MAX_SECONDS evalkit-bench-arguments...
  local name=$1 most=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if [ "$left" -lt 30 ]; then echo "skipped $name (budget spent)" | tee -a "$OUT/summary.txt"; return; fi
  local limit=$((most < left ? most : left))
  local began=$(date +%s)
  # shellcheck disable=SC2086
  timeout "$limit" python -m evalkit bench --random-weights $SMALL "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
  echo "$name rc=$? ${limit}s-limit took $(($(date +%s) - began))s" | tee -a "$OUT/summary.txt"
}

# targets: greedy >= 650 img/s, VQAv2 paper protocol >= 350 q/s, COCO caption protocol >= 150 img/s (OPT-2.7b)
step opt27_targets 180 $GEN -m $OPT27 --task greedy30,vqav2,coco-caption -n $N --batch-size auto
# Flan-T5-XL greedy >= 300 img/s, and its VQA protocol
step t5xl_targets 120 $GEN -m $T5XL --task greedy30,vqav2 -n $N --batch-size auto
# retrieval: COCO 5k with ITM re-rank k=128 <= 3 min (measured on 1,000 images, projected to 5k by the bench)
step itm_retrieval 100 -m $ITM --task retrieval -n $IMAGES --image-size 364 --batch-size 64
# memory: OPT-6.7b and Flan-T5-XXL at batch >= 64
step opt67_b64 60 $GEN -m $OPT67 --task greedy30 -n $((N / 4)) --batch-size 64
step t5xxl_b64 60 $GEN -m $T5XXL --task greedy30 -n $((N / 4)) --batch-size 64
# levers, each against the first step's default: eager attention, the on-device image pipeline, length sorting
step opt27_levers 90 $GEN -m $OPT27 --task greedy30 -n $N --batch-size 256 --attn-implementation sdpa,eager \
  --image-pipeline lavis,device
step opt27_sorting 60 $GEN -m $OPT27 --task vqav2 -n $N --batch-size 256 --length-sort off,on
# a static KV cache (transformers compiles decoding on a GPU: the first batches pay for it)
step opt27_static 120 $GEN -m $OPT27 --task greedy30 -n $N --batch-size 256 --kv-cache static
echo "total $(($(date +%s) - START))s" | tee -a "$OUT/summary.txt"
