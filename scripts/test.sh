#!/usr/bin/env bash
# The test command: installs what the suite needs when it is missing, then runs it.
#
#   scripts/test.sh                      # the whole suite (pytest -q -n 2)
#   scripts/test.sh tests/test_report.py # extra arguments go to pytest
#   scripts/test.sh --no-apt --no-pip -x # use only what is installed already
#
# 1. System packages (Debian/Ubuntu), only for commands that are missing: Java for the COCO caption
#    metrics (default-jre-headless), Chromium and its driver for the HTML report and `evalkit serve`
#    browser tests (chromium, chromium-driver). apt-get runs directly as root, through sudo otherwise.
#    The suite never skips a test for a missing tool: without them, those tests fail.
# 2. Python packages: `pip install -e '.[test]'` into the active virtual environment when evalkit,
#    pytest, pytest-xdist, selenium, evaluate, gradio (the serve extra), mlflow or wandb (the tracker extras;
#    all part of the test extra) cannot be imported (--pip forces it, --no-pip never runs it).
#    Then the side environment of the LAVIS parity harness (scripts/lavis_env.sh) when it is missing or
#    stale (--no-pip skips it too; the harness test then makes it itself).
# 3. `python -m pytest -q -n 2 --dist loadfile "$@"` (loadfile: each test file runs on one worker, so a
#    module-scoped fixture such as tests/test_demo_models.py's demo run happens once); its exit status is
#    this script's.
set -euo pipefail
cd "$(dirname "$0")/.."

apt=1
pip=auto
side_env=1
while [ $# -gt 0 ]; do
  case "$1" in
    --no-apt) apt=0; shift ;;
    --no-pip) pip=0; side_env=0; shift ;;
    --pip) pip=1; shift ;;
    *) break ;;
  esac
done

python=python
command -v "$python" >/dev/null 2>&1 || python=python3

# 1. Java, Chromium, chromedriver
need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(default-jre-headless)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ] && [ "$apt" = 1 ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "scripts/test.sh: missing ${need_apt[*]} and no apt-get here; install Java (>= 11), Chromium and" \
         "chromedriver yourself, then run scripts/test.sh --no-apt" >&2
    exit 2
  fi
  as_root=()
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "scripts/test.sh: missing ${need_apt[*]}; run as root or install sudo" >&2
      exit 2
    fi
    as_root=(sudo)
  fi
  echo "scripts/test.sh: installing from apt: ${need_apt[*]}" >&2
  ${as_root[@]+"${as_root[@]}"} apt-get update -qq >/dev/null
  ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# 2. evalkit with its test extras
if [ "$pip" = auto ]; then
  if "$python" -c "import evalkit, pytest, xdist, selenium, evaluate, gradio, gradio_client, mlflow, wandb" >/dev/null 2>&1; then pip=0; else pip=1; fi
fi
if [ "$pip" = 1 ]; then
  if ! "$python" -c "import sys; sys.exit(sys.prefix == sys.base_prefix)"; then
    echo "scripts/test.sh: activate a virtual environment first" \
         "(python3 -m venv .venv && . .venv/bin/activate), or pass --no-pip" >&2
    exit 2
  fi
  "$python" -m pip install -q -e '.[test]'
  # gradio (the serve extra) caps Pillow below 13; the suite runs with the Pillow a base install gets (13), the
  # one whose own one-call resize differs from LAVIS's (tests/test_pillow_reference_pixels.py)
  "$python" -m pip install -q 'pillow>=13' 2>&1 | grep -v "dependency conflicts\|gradio .* requires pillow" >&2 || true
fi

# 2b. the side environment in which tests/test_lavis_reference.py runs LAVIS's own BLIP-2 code
#     (.lavis-env: salesforce-lavis 1.0.2, transformers 4.26.1, timm 0.4.12; made once, then cached)
if [ "$side_env" = 1 ]; then
  scripts/lavis_env.sh
fi

# 3. the suite
exec "$python" -m pytest -q -n 2 --dist loadfile "$@"
