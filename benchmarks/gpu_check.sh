#!/usr/bin/env bash
# Run on a CUDA machine: the GPU tests (pytest -m gpu), `dessam bench --device cuda` and the ONNX
# engine on ONNX Runtime's CUDA provider (benchmarks/onnx_cuda_check.py), in under seven minutes,
# from the repository root or anywhere else.
#
# The machine needs python with torch and torchvision. Missing packages (segment-anything,
# pycocotools, pytest, onnxruntime-gpu, ...) are installed from wheels in .whl/ when that folder
# has any, without network access, into /tmp/site; nothing is downloaded here.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PY" -c "import torch; print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|', torch.cuda.get_device_name(0))"

status=0
if "$PY" -c "import pytest" 2> /dev/null; then
    # Only the modules with gpu-marked tests: the others may need packages this machine lacks.
    mapfile -t gpu_tests < <(grep -l "mark.gpu" tests/test_*.py)
    timeout 100 "$PY" -m pytest -q -m gpu -p no:cacheprovider "${gpu_tests[@]}" || status=$?
else
    echo "pytest is not installed: put its wheel (and pluggy, iniconfig, packaging) in .whl/ to run the GPU tests"
    status=1
fi
timeout 180 "$PY" -m dessam bench --device cuda || status=$?
if "$PY" -c "import onnxruntime, sys; sys.exit('CUDAExecutionProvider' not in onnxruntime.get_available_providers())" 2> /dev/null; then
    timeout 120 "$PY" benchmarks/onnx_cuda_check.py || status=$?
else
    echo "onnxruntime-gpu (with its CUDA provider) is not installed: put its wheel in .whl/ to check the ONNX engine on CUDA"
    status=1
fi
exit $status
