"""The ONNX engine on ONNX Runtime's CUDA execution provider, against the CPU provider and PyTorch on CUDA.

    python benchmarks/onnx_cuda_check.py   (run on a CUDA machine with onnxruntime-gpu; gpu_check.sh runs it)

Exports the bundled pretrained model (or --model) into a temporary folder, checks that the graphs
run on the CUDA provider (not silently on the CPU), and compares, on synthetic fields of 512 px:
the masks of the CUDA and CPU providers and of PyTorch on CUDA prompted with the same boxes (mean
IoU over at least 100 masks, as `dessam bench` requires), and images per second of each. Exit
status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pretrained")
    parser.add_argument("--fields", type=int, default=8)
    args = parser.parse_args(argv)

    import onnxruntime

    from dessam.workflows.agreement import mask_agreement
    from dessam.workflows.bench import demo_fields
    from dessam.inference.export import export_model
    from dessam.inference.loading import load_model
    from dessam.inference.onnx_predictor import OnnxPredictor

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        print(f"onnxruntime {onnxruntime.__version__} has no CUDA provider: install onnxruntime-gpu")
        return 1
    torch_cuda = load_model(args.model, device="cuda")
    fields = demo_fields(args.fields, 512, scene="mixed")
    with tempfile.TemporaryDirectory(prefix="dessam-onnx-cuda-") as folder:
        export_model(load_model(args.model, device="cpu"), Path(folder) / "graphs", model_path=torch_cuda.path)
        cuda = OnnxPredictor(Path(folder) / "graphs", cuda=True)
        cpu = OnnxPredictor(Path(folder) / "graphs")
        providers = cuda.encoder.get_providers()
        print(f"onnxruntime {onnxruntime.__version__}; encoder session providers: {providers}")
        status = 0 if providers[0] == "CUDAExecutionProvider" else 1
        for name, engine in (("ONNX Runtime CUDA", cuda), ("ONNX Runtime CPU", cpu), ("PyTorch CUDA", torch_cuda)):
            engine.predict_batch(fields[:1])
            start = time.perf_counter()
            found = engine.predict_batch(fields)
            print(f"{name}: {len(fields) / (time.perf_counter() - start):.2f} img/s, "
                  f"{sum(len(p) for p in found)} nuclei")
        for name, other in (("CPU provider", cpu), ("PyTorch CUDA", torch_cuda)):
            agreement = mask_agreement(cuda, other, fields)
            print(f"masks, CUDA provider vs {name}, same boxes: mean IoU {agreement.iou:.4f} over {agreement.masks} "
                  f"masks: {agreement.verdict()}")
            status |= 0 if agreement.passed else 1
    return status


if __name__ == "__main__":
    sys.exit(main())
