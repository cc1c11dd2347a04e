#!/usr/bin/env bash
# Checks the claim in evalkit/demo/MODELS.md: the training command rewrites the shipped demo weights bit
# for bit (same torch build, same thread count). Retrains all three models into a temporary folder with the
# documented command (seed 0, 2 threads: the script's defaults) and compares the sha256 of every
# model.safetensors with the shipped file. About 13 min on 2 CPU cores; not run in CI.
#
#   scripts/check_retrain.sh            # exit 0: all identical; 1: a mismatch (named); 2: training failed
#   scripts/check_retrain.sh --keep DIR # retrain into DIR and keep it (e.g. for `evalkit demo --models-dir DIR`)
#
# Extra arguments after the options go to scripts/train_demo_models.py (e.g. --models itm).
set -euo pipefail
cd "$(dirname "$0")/.."

python=python
command -v "$python" >/dev/null 2>&1 || python=python3
shipped=evalkit/demo/models
models=(blip2-tiny-opt blip2-tiny-t5 blip2-tiny-itm)

if [ "${1:-}" = --keep ]; then
  [ $# -ge 2 ] || { echo "scripts/check_retrain.sh: --keep needs a folder" >&2; exit 2; }
  out="$2"
  shift 2
  mkdir -p "$out"
else
  out="$(mktemp -d "${TMPDIR:-/tmp}/evalkit-retrain.XXXXXX")"
  trap 'rm -rf "$out"' EXIT
fi

"$python" -c "import torch, transformers; print(f'torch {torch.__version__}, transformers {transformers.__version__}')"
echo "retraining into $out (the shipped weights: the torch build and threads in evalkit/demo/MODELS.md)"
if ! "$python" scripts/train_demo_models.py --out-root "$out" --no-eval "$@"; then
  echo "scripts/check_retrain.sh: training failed" >&2
  exit 2
fi

status=0
checked=0
for model in "${models[@]}"; do
  [ -f "$out/$model/model.safetensors" ] || continue  # --models may train a subset
  want="$(sha256sum "$shipped/$model/model.safetensors" | cut -d' ' -f1)"
  got="$(sha256sum "$out/$model/model.safetensors" | cut -d' ' -f1)"
  checked=$((checked + 1))
  if [ "$want" = "$got" ]; then
    echo "identical  $model  $got"
  else
    echo "MISMATCH   $model  shipped $want  retrained $got" >&2
    status=1
  fi
done
if [ "$checked" = 0 ]; then
  echo "scripts/check_retrain.sh: the training wrote no model.safetensors under $out" >&2
  exit 2
fi
exit "$status"
