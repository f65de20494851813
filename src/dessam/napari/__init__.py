"""dessam in napari: Segment, Masks from boxes and Train from boxes widgets, a reader and a writer
for dessam's files, and a sample field (`pip install "dessam[napari]"`; manifest: napari.yaml).

Only napari imports this package: the rest of dessam never needs napari or Qt.
"""

import sys


def _keep_triton_out() -> None:
    """Keep PyTorch from loading triton once Mesa's OpenGL driver has loaded its LLVM.

    napari draws with OpenGL; with Mesa (software rendering, most AMD and Intel graphics) that
    loads Mesa's own LLVM into the process. The plugin's modules load after the viewer, and
    PyTorch then imports triton (its GPU compiler, as torchvision loads), whose LLVM crashes the
    whole process against Mesa's (a segmentation fault, napari and all). dessam needs no triton:
    without it PyTorch runs as before, and torch.compile on CUDA, which dessam only tries, is
    left out.
    """
    if "triton" in sys.modules or not sys.platform.startswith("linux"):
        return
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            mesa_llvm = any("libLLVM" in line for line in maps)
    except OSError:
        return
    if mesa_llvm:
        sys.modules["triton"] = None  # `import triton` now raises ImportError, which PyTorch expects


_keep_triton_out()
