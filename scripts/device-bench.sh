#!/usr/bin/env bash
# Run bench/gpu.py (avsc's training step on an accelerator) on a machine whose Python has JAX,
# NumPy, pyarrow and Pillow but no TensorFlow, Keras or package registry: the few pure-Python
# (and two small binary) wheels it needs travel with the repository in a folder.
#
#   scripts/device-bench.sh fetch [PYTHON_VERSION]   # where PyPI is reachable: wheels -> $WHEELS
#   scripts/device-bench.sh run [bench/gpu.py options] # on the device machine, repository root
#
# `fetch` downloads, for CPython PYTHON_VERSION (default 3.12) on manylinux x86-64:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .whl NAME==VERSION
# (one per entry of WHEELS_NEEDED; optree's recent wheels are manylinux_2_28 only),
# about 8 MB in all. `run` installs them with `pip install --no-index --no-deps --target`
# into a private folder that is searched AFTER the machine's own site-packages (a package the
# machine has wins), then runs the benchmark twice on one synthetic store at the paper preset:
# every backbone with mixed_bfloat16, then Aud-MEL and Vis-INC in float32 (XLA compilation on,
# Keras' default on JAX). It writes $OUT/gpu-bf16.json, $OUT/gpu-fp32.json, their merge
# $OUT/summary.json, and the log $OUT/device-bench.log.
#
# Environment: WHEELS (default .whl), OUT (default bench-out), PYTHON (default python3),
# BENCH_ARGS (extra options for both passes, e.g. "--device cpu --preset quick --clips 32").
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=${WHEELS:-.whl}
OUT=${OUT:-bench-out}
PYTHON=${PYTHON:-python3}
WHEELS_NEEDED=(
    keras==3.15.1 namex==0.1.0 optree==0.20.0 absl-py==2.5.1
    rich==15.0.0 markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0
    pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
    typing-extensions==4.16.0 lazy-loader==0.6 packaging==26.4
)

fetch() {
    local version=${1:-3.12}
    mkdir -p "$WHEELS"
    for wheel in "${WHEELS_NEEDED[@]}"; do
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" \
            --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d "$WHEELS" "$wheel"
    done
    du -sh "$WHEELS"
}

run() {
    local site="$OUT/site-packages"
    mkdir -p "$OUT"
    "$PYTHON" - <<'EOF' || { echo "device-bench: error: this Python lacks a package the benchmark needs (above); install it or run where it is" >&2; exit 1; }
import importlib.util, sys
missing = [m for m in ("jax", "numpy", "pyarrow", "PIL") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit("missing: " + ", ".join(missing))
EOF
    if ! compgen -G "$WHEELS/*.whl" > /dev/null; then
        echo "device-bench: error: no wheels in $WHEELS; run 'scripts/device-bench.sh fetch' where PyPI is reachable" >&2
        exit 1
    fi
    "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$site" "$WHEELS"/*.whl
    # The carried packages come after the machine's own: its jax, numpy, h5py ... win.
    local launcher="import runpy, sys; sys.path.append('$site'); sys.path.insert(0, 'src'); \
sys.argv = ['bench/gpu.py'] + sys.argv[1:]; runpy.run_path('bench/gpu.py', run_name='__main__')"
    local store="$OUT/store"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
    {
        KERAS_BACKEND=jax "$PYTHON" -c "$launcher" --store "$store" --precision mixed_bfloat16 \
            --json "$OUT/gpu-bf16.json" ${BENCH_ARGS:-} "$@"
        KERAS_BACKEND=jax "$PYTHON" -c "$launcher" --store "$store" --precision float32 \
            --backbones aud-mel,vis-inc --json "$OUT/gpu-fp32.json" ${BENCH_ARGS:-} "$@"
    } 2>&1 | tee "$OUT/device-bench.log"
    "$PYTHON" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
parts = [json.loads((out / name).read_text()) for name in ("gpu-bf16.json", "gpu-fp32.json")]
summary = dict(parts[0], results=[row for part in parts for row in part["results"]])
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(f"device-bench: {len(summary['results'])} measurements -> {out / 'summary.json'}")
EOF
}

case "${1:-}" in
    fetch) shift; fetch "$@" ;;
    run) shift; run "$@" ;;
    *) echo "usage: scripts/device-bench.sh fetch [PYTHON_VERSION] | run [bench/gpu.py options]" >&2; exit 2 ;;
esac
