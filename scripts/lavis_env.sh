#!/usr/bin/env bash
# Creates the side environment in which tests/test_lavis_reference.py runs LAVIS's own BLIP-2 model code:
# the salesforce-lavis 1.0.2 wheel (no dependencies: its list pulls decord, spacy, streamlit, ... that the
# model files never import) plus the versions LAVIS pins (transformers >=4.25,<4.27, timm 0.4.12) and what
# the import chain of lavis/models/blip2_models/*.py needs. Never the main venv: transformers 4.26 and 5.x
# cannot live side by side.
#
#   scripts/lavis_env.sh [DIR]     # default .lavis-env; does nothing when DIR/.complete exists
#
# The folder is git-ignored and cached between runs; a half-built one (no .complete), or one made from another
# package list, is rebuilt. Takes 2-3 minutes on an idle machine (most of it installing torch).
set -euo pipefail
cd "$(dirname "$0")/.."
env_dir="${1:-.lavis-env}"
# what the folder holds; a folder made from another list is rebuilt
spec="salesforce-lavis==1.0.2 transformers==4.26.1 tokenizers==0.13.3 huggingface-hub==0.12.1 timm==0.4.12 (no deps)
numpy<2 omegaconf==2.3.0 iopath==0.1.10 pandas<2.3 pyyaml safetensors<0.5 torch==2.13.0"
[ -f "$env_dir/.complete" ] && [ "$(cat "$env_dir/.complete")" = "$spec" ] && exit 0
python=python3
command -v "$python" >/dev/null 2>&1 || python=python
rm -rf "$env_dir"
echo "scripts/lavis_env.sh: creating $env_dir (LAVIS 1.0.2, transformers 4.26.1, timm 0.4.12; a few minutes)" >&2
"$python" -m venv "$env_dir"
pip=("$env_dir/bin/python" -m pip install -q --disable-pip-version-check)
# torch: the CPU build first where it lies on disk (torch==2.13.0 here), else the index's
"${pip[@]}" "torch==2.13.0"
"${pip[@]}" "transformers==4.26.1" "tokenizers==0.13.3" "huggingface-hub==0.12.1" \
  "numpy<2" "omegaconf==2.3.0" "iopath==0.1.10" "pandas<2.3" "pyyaml" "safetensors<0.5"
# no dependencies: timm 0.4.12 asks for torchvision, and the index's torchvision wheels are CUDA builds whose
# operators do not load beside a CPU torch; the model code never imports torchvision (see lavis_side.py STUBS)
"${pip[@]}" --no-deps "timm==0.4.12" "salesforce-lavis==1.0.2"
printf '%s' "$spec" > "$env_dir/.complete"
