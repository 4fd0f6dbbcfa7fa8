#!/usr/bin/env bash
# Everything that needs a GPU, in one call (a few minutes on one H100/H200):
#   bash benchmarks/gpu_suite.sh          # from the repository root, ../shared (or shared/) beside it
# Runs `pytest --gpu` on the GPU-marked tests, then the GPU benchmarks; figures go to stdout and
# to $OUT/ (when set, e.g. by the device tool). It uses the machine's python3, which must have
# a CUDA build of torch, transformers and accelerate. Packages it lacks (anndata, scanpy, mudata,
# pooch, ... on a bare CUDA image) can be carried as wheels for its Python in .whl/, made on a
# machine with PyPI access:
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
#       anndata scanpy mudata pooch legacy-api-wrap session-info2 array-api-compat natsort \
#       umap-learn pynndescent zarr numcodecs donfig crc32c bitsandbytes peft scikit-learn
# (then delete the wheels of packages the GPU machine already has).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-benchmarks/_work/gpu}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:$PWD:${PYTHONPATH:-}"
[ -d ../shared ] || [ ! -d shared ] || export SCGF_SHARED_DIR="$PWD/shared"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

timeout 200 python3 -m pytest -q --gpu -m gpu -p no:cacheprovider 2>&1 | tee "$OUT/pytest_gpu.txt"
timeout 120 python3 -m benchmarks.embed_speed --shapes Geneformer-V2-104M --device cuda \
    --cells-v2 2000 2>&1 | tail -40 | tee "$OUT/embed_speed.txt"
timeout 90 python3 -m benchmarks.perturb_speed --shape Geneformer-V2-104M --device cuda \
    --cells 4 --batches 100 2>&1 | tail -40 | tee "$OUT/perturb_speed.txt"
timeout 150 python3 -m benchmarks.finetune_speed --shape Geneformer-V2-104M --device cuda \
    --cells 600 --epochs 1 --arms scgf reference scgf-bf16 scgf-qlora 2>&1 | tail -60 \
    | tee "$OUT/finetune_speed.txt"
