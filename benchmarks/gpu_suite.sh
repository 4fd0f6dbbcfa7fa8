#!/usr/bin/env bash
# Everything that needs a GPU, in one call (under 8 minutes on one H100/H200):
#   bash benchmarks/gpu_suite.sh            # from the repository root, ../shared beside it
# Installs the project with the GPU build of torch, runs `pytest --gpu` on the GPU-marked tests,
# then the GPU benchmarks. Figures go to stdout (and $OUT/ when set, for the device tool).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/_work/gpu}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"

python3 -m venv .gpu-venv
. .gpu-venv/bin/activate
pip install --quiet --upgrade pip
pip install --quiet ".[test,quant]" 2>&1 | tail -2
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

timeout 240 python -m pytest -q --gpu -m gpu -p no:cacheprovider 2>&1 | tee "$OUT/pytest_gpu.txt"

timeout 120 python -m benchmarks.embed_speed --shapes Geneformer-V2-104M --device cuda \
    --cells-v2 2000 2>&1 | tee "$OUT/embed_speed.txt"
timeout 90 python -m benchmarks.perturb_speed --shape Geneformer-V2-104M --device cuda \
    --cells 4 --batches 100 2>&1 | tee "$OUT/perturb_speed.txt"
