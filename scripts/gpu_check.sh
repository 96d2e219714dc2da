#!/usr/bin/env bash
# GPU check (run only on a machine with an NVIDIA GPU), from the repository root:
#
#     bash scripts/gpu_check.sh [DATA_DIR]
#
# 1. Finds a Python whose jax sees the GPU: $PY if set, else python3 if its jax already has CUDA, else
#    it creates .venv, installs the project and the CUDA build of jax (needs the package registry).
# 2. Correctness on the GPU: relevance of the reference BiLSTM on the GPU vs the CPU backend (float32),
#    conservation with bias_factor=1, a jitted batch with padding vs per-example results.
# 3. Speed, large batches: bench_core (B=4096; its kernel-goal rows at T=20), bench_flax,
#    bench_attribute (batch 4096; the SST test sentences from DATA_DIR, default
#    ../shared/data/sst_bilstm_li2016), and bench_pipeline at batch 4096 (the job's rate as a % of the
#    bare relevance rate: goal >= 50 %), printing examples/s.
# Each step prints its result; a failing step is reported and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data/sst_bilstm_li2016}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

has_gpu() { "$1" -c "import jax, sys; sys.exit(0 if jax.default_backend() == 'gpu' else 1)" 2>/dev/null; }
if [ -n "${PY:-}" ]; then :
elif has_gpu python3; then PY=python3
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
  "$PY" -m pip install -q -e ".[test]"
  "$PY" -m pip install -q "jax[cuda12]==$("$PY" -c 'import jax; print(jax.__version__)')"
fi
"$PY" - <<'EOF'
import jax, jaxlib, numpy, flax, sys
print(f"python {sys.version.split()[0]}  jax {jax.__version__}  jaxlib {jaxlib.__version__}  "
      f"flax {flax.__version__}  numpy {numpy.__version__}")
print("devices:", jax.devices(), " backend:", jax.default_backend())
EOF

status=0
step() { echo; echo "=== $1"; shift; "$@" || { echo "=== FAILED (status $?): $*"; status=1; }; }

step "correctness on the GPU (vs the CPU backend)" "$PY" - "$DATA" <<'EOF'
import os, sys
import numpy as np, jax, jax.numpy as jnp, lrpjax
# no precision setting here: lrpjax.relevance asks for full float32 matmuls itself (TF32 would change R)
data = sys.argv[1]
path = os.path.join(data, "weights.npz")
if os.path.exists(path):
    w = {k: np.asarray(v, np.float32) for k, v in np.load(path).items()}
else:  # random weights of the reference shapes
    rng = np.random.default_rng(0)
    shp = {"Wxh": (240, 60), "Whh": (240, 60), "bxh": (240,), "bhh": (240,), "Why": (5, 60)}
    w = {f"{k}_{s}": rng.normal(0, 0.3, v).astype(np.float32) for k, v in shp.items() for s in ("Left", "Right")}
model = lrpjax.interop.from_arras_bilstm(w)
rng = np.random.default_rng(1)
B, T = 512, 40
x = rng.uniform(-0.5, 0.5, (B, T, 60)).astype(np.float32)
lengths = rng.integers(1, T + 1, B).astype(np.int32)
cpu, gpu = jax.devices("cpu")[0], jax.devices()[0]
fn = {bf: jax.jit(lambda x, l, bf=bf: lrpjax.explain(lambda z: model(z, l), x, bias_factor=bf))
      for bf in (0.0, 1.0)}
out = {}
for name, dev in (("cpu", cpu), ("gpu", gpu)):
    with jax.default_device(dev):
        out[name] = [jax.device_get(fn[bf](jnp.asarray(x), jnp.asarray(lengths))) for bf in (0.0, 1.0)]
R_c, R_g = out["cpu"][0].relevance, out["gpu"][0].relevance
err = np.abs(R_g - R_c).max() / np.abs(R_c).max()
print(f"max|R_gpu - R_cpu| / max|R_cpu| = {err:.2e} (B={B}, T={T}, float32, padded lengths 1..{T})")
ex = out["gpu"][1]
score = ex.scores[np.arange(B), ex.target]
gap = np.abs(ex.relevance.reshape(B, -1).sum(1) + ex.initial_state - score).max() / np.abs(score).max()
print(f"bias_factor=1 conservation on the GPU: max|sum R + R_init - score| / max|score| = {gap:.2e}")
pad = max(np.abs(ex.relevance[i, lengths[i]:]).max(initial=0.0) for i in range(B))
print(f"relevance on padded steps: max |R| = {pad:.1e}")
ok = err < 1e-3 and gap < 1e-4 and pad == 0.0
print("correctness:", "OK" if ok else "MISMATCH")
sys.exit(0 if ok else 1)
EOF

step "bench_core, B=4096" "$PY" scripts/bench_core.py --batch 4096 --repeats 11 --oracle-samples 4 \
  --weights "$DATA/weights.npz"
step "bench_flax" "$PY" scripts/bench_flax.py --repeats 11
step "bench_attribute, batch 4096" "$PY" scripts/bench_attribute.py --batch-size 4096 --repeat 40 \
  --data "$DATA" --numpy-samples 100
step "bench_pipeline, batch 4096" "$PY" scripts/bench_pipeline.py --batch-size 4096 --sst-batch-size 4096 \
  --sst-repeat 40 --n 1000000
exit $status
