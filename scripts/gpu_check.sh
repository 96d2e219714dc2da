#!/usr/bin/env bash
# GPU check (run only on a machine with an NVIDIA GPU): install the CUDA build of jax into the
# project's virtual environment, show the device, and run the core and Flax benchmarks with large
# batches, printing samples/s. Usage, from the repository root:  bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || { python3 -m venv .venv && PY=.venv/bin/python; }
"$PY" -m pip install -q -e ".[test]"
"$PY" -m pip install -q "jax[cuda12]==$("$PY" -c 'import jax; print(jax.__version__)')"
"$PY" -c "import jax; print('devices:', jax.devices())"
PYTHONPATH=. "$PY" scripts/bench_core.py --batch 4096 --repeats 11
PYTHONPATH=. "$PY" scripts/bench_flax.py --repeats 11
if [ -f scripts/bench_attribute.py ]; then
  PYTHONPATH=. "$PY" scripts/bench_attribute.py --batch-size 4096
fi
