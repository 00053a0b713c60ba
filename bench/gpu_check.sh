#!/usr/bin/env bash
# The GPU checks in one call of a lent CUDA machine (BENCHMARKS.md, "GPU"), in order of value, each step
# time-bounded so that a failure or a hang in one keeps what the others measured. ~7 min in all.
#
#   bash bench/gpu_check.sh wheels   # HERE (with internet): the wheels the GPU machine lacks, into .whl/
#   bash bench/gpu_check.sh          # THERE: install .whl/ into /tmp/site, nvidia-smi, pytest -m gpu, bench.gpu
#   HARNESS_GPU_TEST_HW=hardware=cpu BENCH_ARGS="--quick --device cpu" bash bench/gpu_check.sh   # a CPU dry run
#
# The machine (see the device notes) has Python 3.12, torch 2.11+cu130, transformers 5.17, peft, accelerate,
# no internet and no optuna/hydra/omegaconf/pydantic/bitsandbytes/gguf; transformers is carried at our pin.
# bitsandbytes' wheel holds one library per CUDA version (43 MB): only the cuda130 one (torch's CUDA) and
# the CPU one are kept. Outputs: $OUT/log.txt and the bench JSON files (bench/results/*gpu*.json).
set -o pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"

if [ "${1:-}" = wheels ]; then
  plat="--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform any"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $plat -d .whl \
    optuna==5.0.0 sqlalchemy==2.1.9 alembic==1.20.1 mako==1.4.3 colorlog==6.12.0 greenlet==3.5.6 \
    hydra-core==1.3.8 omegaconf==2.3.1 pydantic==2.14.4 pydantic-core==2.50.5 typing-inspection==0.4.5 \
    annotated-types==0.8.0 typing-extensions==4.16.0 transformers==5.24.0 peft==0.21.2 gguf==0.19.0 \
    bitsandbytes==0.50.2 || exit 1
  python3 -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3 || exit 1  # sdist only
  python3 - <<'EOF' || exit 1
import glob, zipfile, os
src = glob.glob(".whl/bitsandbytes-*.whl")[0]
keep = lambda n: not n.endswith(".so") or n.endswith(("cuda130.so", "_cpu.so"))
tmp = src + ".tmp"
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
    for i in zin.infolist():
        if keep(i.filename):
            data = zin.read(i.filename)
            if i.filename.endswith("/RECORD"):  # drop the removed libraries' lines too
                data = b"\n".join(l for l in data.split(b"\n") if keep(l.split(b",")[0].decode()))
            z.writestr(i, data)
os.replace(tmp, src)
EOF
  du -sh .whl
  exit 0
fi

export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false HARNESS_QUIET=1
step() {  # step NAME SECONDS CMD...: one bounded step; its exit code is logged, the script goes on
  local name=$1 secs=$2; shift 2
  echo "=== $name (limit ${secs}s) $(date -u +%T)"
  local t0=$SECONDS
  timeout -k 10 "$secs" "$@"
  echo "=== $name: exit $? after $((SECONDS - t0))s"
}
{
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || echo "=== wheel install FAILED"
  export PYTHONPATH=/tmp/site:$PWD
  step nvidia-smi 20 nvidia-smi
  step versions 40 python3 -c "
import torch, transformers, peft, accelerate, bitsandbytes, optuna, hydra, pydantic, sys
print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))
print('transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__,
      'bitsandbytes', bitsandbytes.__version__, 'optuna', optuna.__version__, 'pydantic', pydantic.__version__)
import bitsandbytes.cextension as c; print('bnb library:', getattr(c, 'BNB_BACKEND', ''), c.lib)"
  step "pytest -m gpu" 130 python3 -m pytest -m gpu -q -s -p no:cacheprovider tests/trial/test_gpu.py
  step "bench.gpu throughput" 200 python3 -m bench.gpu --parts throughput --out "$OUT" $BENCH_ARGS
  step "bench.gpu fixed cost (issue 12)" 100 python3 -m bench.gpu --parts fixed --out "$OUT" $BENCH_ARGS
} 2>&1 | grep --line-buffered -v '^\[harness\] step ' | tee "$OUT/log.txt"
