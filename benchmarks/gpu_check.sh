#!/usr/bin/env bash
# benchmarks/gpu_check.py on the GPU machine, with its own torch: the wheels in .whl/ (bitsandbytes, and
# the transformers peftcode is developed against, see benchmarks/README.md) go to /tmp/site, peftcode comes
# from src/, and the tables go to $OUT/gpu_check.md (the run tool brings $OUT back).
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
# The planner caches model shapes under XDG_CACHE_HOME: somewhere writable on a bare machine.
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-/tmp/cache}"
export PYTHONUNBUFFERED=1
python3 benchmarks/gpu_check.py --out "${OUT:-.}/gpu_check.md" "$@"
