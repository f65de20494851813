"""Where and how inference runs. `Runtime`: the engine, the device, the precision, CPU threads and
compilation, what the `--engine`, `--device`, `--precision`, `--threads` and `--compile` flags of
every command that runs a model say, composed once. `InferenceSettings`: how the PyTorch engine runs
within that: precision, batching, prompt chunks, local decoding, proposals, compilation, trimmed inputs.

None of these change what the model is; they change how it is run. `reference_settings()`
reproduces how the authors run inference (fp32, one image at a time, 50 prompts per decoder call
over the whole embedding, 1000 proposals), so that `dessam bench` can time the fast path against it
and compare their masks in the same run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Union

from ..errors import DessamError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ENGINES = ("auto", "torch", "onnx")
RUNTIME_PRECISIONS = PRECISIONS + ("int8",)  # int8: the ONNX engine's dynamically quantised graphs
# The authors' test code (StandardRoIMaskHead._mask_pred) splits the box prompts of an image into
# groups of 50 per decoder call; training uses 40.
REFERENCE_DECODER_CHUNK = 50
REFERENCE_TEST_PROPOSALS = 1000  # the official test_cfg.rpn.max_per_img
# torch.compile of the ViT-B encoder takes about a minute; "auto" compiles only for jobs long
# enough to win that back.
AUTO_COMPILE_MIN_IMAGES = 1000


@dataclass
class InferenceSettings:
    """How inference runs; none of these change what the model computes beyond float rounding.

    precision: the encoder's autocast: "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16" or "fp16".
    decoder_chunk: box prompts per decoder call.
    compile: torch.compile the encoder and decoder: False, True or "auto" (CUDA jobs of at least
        `AUTO_COMPILE_MIN_IMAGES` images).
    batch_size: images per encoder call.
    decoder_precision: the decoder's autocast; "auto" is fp32 when the encoder runs in fp32 and
        fp16 otherwise. bf16 keeps the ViT encoder's range (fp16 is known to break ViT-H), but its
        8-bit mantissa moves the decoder's mask boundaries: with the default teacher, small nuclei
        kept a mean mask IoU of 0.95 against fp32 with a bf16 decoder, 0.99 with an fp16 one.
    local_decoding: decode each box on a window of the embedding around it (None: as the model
        was configured; False: the whole embedding, as the authors).
    test_proposals: proposals the RPN keeps per image after NMS at test time, before the box head
        (None: the model's `rpn_post_nms_test`, officially 1000).
    trim_inputs: encode an image smaller than the input without the input's zero padding, where the
        model allows it (`dessam.inference.pipeline.Encoded`). Unlike the settings above this moves
        detections, not only float rounding: the encoder's per-image normalisation then sees the
        image alone (measured in docs/detection.md). False: the authors' padded input.
    """

    precision: str = "auto"
    decoder_chunk: int = 256
    compile: Union[bool, str] = False
    batch_size: int = 8
    decoder_precision: str = "auto"
    local_decoding: Optional[bool] = None   # None: the model's own setting (model.local_decoding)
    test_proposals: Optional[int] = None    # RPN proposals kept per image at test time; None: the model's (1000)
    trim_inputs: bool = True                # a small image encoded without the input's padding, where the model allows

    def __post_init__(self):
        for name in (self.precision, self.decoder_precision):
            if name not in PRECISIONS:
                raise DessamError(f"--precision {name}: use one of {', '.join(PRECISIONS)}")
        if self.compile not in (True, False, "auto"):
            raise DessamError(f"compile={self.compile!r}: use true, false or auto")
        if int(self.decoder_chunk) < 1 or int(self.batch_size) < 1:
            raise DessamError("decoder_chunk and batch_size must be at least 1")
        if self.test_proposals is not None and int(self.test_proposals) < 1:
            raise DessamError(f"test_proposals={self.test_proposals}: keep at least 1 proposal per image")

    def precision_of(self, device, part: str = "encoder") -> str:
        """The precision of `part` ("encoder" or "decoder") on `device`: "fp32", "bf16" or "fp16"."""
        encoder = self.precision
        if encoder == "auto":
            encoder = "bf16" if device_type(device) == "cuda" else "fp32"
        if part == "encoder":
            return encoder
        decoder = self.decoder_precision
        if decoder == "auto":
            decoder = "fp32" if encoder == "fp32" else "fp16"
        return decoder

    def autocast_dtype(self, device, part: str = "encoder"):
        """The autocast torch dtype of `part` ("encoder" or "decoder") on `device`; None for plain fp32."""
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision_of(device, part))

    def compiles(self, device, n_images: Optional[int] = None) -> bool:
        """Whether a job of `n_images` (None: unknown, counted as short) on `device` is compiled."""
        if self.compile == "auto":
            return device_type(device) == "cuda" and (n_images or 0) >= AUTO_COMPILE_MIN_IMAGES
        return bool(self.compile)

    def describe(self, device, n_images: Optional[int] = None) -> str:
        encoder, decoder = (self.precision_of(device, part) for part in ("encoder", "decoder"))
        precision = encoder if encoder == decoder else f"{encoder} encoder, {decoder} decoder"
        local = {None: "the model's decoding", True: "local decoding", False: "full decoding"}[self.local_decoding]
        proposals = "the model's test proposals" if self.test_proposals is None else f"{self.test_proposals} test proposals"
        return (f"{precision}, {self.batch_size} image(s) per encoder call, {self.decoder_chunk} prompts per "
                f"decoder call, {local}, {proposals}, {'torch.compile' if self.compiles(device, n_images) else 'eager'}")


def device_type(device) -> str:
    """"cpu" or "cuda" of a torch device or its name (without importing torch)."""
    return getattr(device, "type", None) or str(device).split(":")[0]


def reference_settings() -> InferenceSettings:
    """The authors' way: fp32, one image per encoder call, 50 prompts per decoder call on the whole
    embedding, 1000 test proposals, eager. Small images are trimmed as on the fast path
    (`trim_inputs`): trimming moves detections, and the reference is there to check that the fast
    path's speed-ups do not."""
    return InferenceSettings(precision="fp32", decoder_chunk=REFERENCE_DECODER_CHUNK, compile=False, batch_size=1,
                             decoder_precision="fp32", local_decoding=False, test_proposals=REFERENCE_TEST_PROPOSALS)


def fast_settings(device="cpu") -> InferenceSettings:
    """CUDA: bf16 encoder, fp16 decoder, 8-image batches. CPU: fp32 and 4-image batches, as memory is
    tighter there (a ViT-B global-attention map alone is 0.8 GB per image at 1024 x 1024 in fp32).
    Local decoding and the test proposals are the model's own.

    A bf16 encoder on a CPU is asked for, never chosen (`--precision bf16`): on CPUs with bf16 matrix
    units (Intel AMX) it encoded twice as fast and kept a mean mask IoU of 0.994 with fp32 (default
    teacher, 18 synthetic fields, 258 nuclei), but results then depend on the CPU (the decoder stays
    fp32 even then: on a CPU it is slower in reduced precision, and its mask boundaries move)."""
    if device_type(device) == "cuda":
        return InferenceSettings(precision="auto", decoder_chunk=256, compile="auto", batch_size=8)
    return InferenceSettings(precision="fp32", decoder_precision="fp32", decoder_chunk=256, compile=False,
                             batch_size=4)


@dataclass(frozen=True)
class Runtime:
    """Where a model runs: none of this changes what the model is.

    engine: "torch" (PyTorch), "onnx" (the exported graphs run by ONNX Runtime) or "auto" (ONNX
        Runtime on a CPU when the ONNX extra is installed, else PyTorch: `dessam.inference.engines`).
    device: "cpu", "cuda" or "auto".
    precision: "auto", "fp32", "bf16" or "fp16" (PyTorch, see `InferenceSettings`), or "int8" (ONNX).
    threads: CPU threads (None: one per core).
    compile: torch.compile on the PyTorch engine (None: as its fast path decides for the device).
    """

    engine: str = "auto"
    device: str = "auto"
    precision: str = "auto"
    threads: Optional[int] = None
    compile: Optional[Union[bool, str]] = None

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise DessamError(f"--engine {self.engine}: use {', '.join(ENGINES)}")
        if self.precision not in RUNTIME_PRECISIONS:
            raise DessamError(f"--precision {self.precision}: use one of {', '.join(RUNTIME_PRECISIONS)}")
        if self.threads is not None and int(self.threads) < 1:
            raise DessamError(f"--threads {self.threads}: use 1 or more")

    @classmethod
    def from_args(cls, args) -> "Runtime":
        """The runtime a command's flags ask for; a command without one of them gets its default."""
        return cls(**{name: getattr(args, name) for name in ("engine", "device", "precision", "threads", "compile")
                      if getattr(args, name, None) is not None})

    @property
    def cuda(self) -> bool:
        return str(self.device).startswith("cuda")

    def torch_settings(self) -> InferenceSettings:
        """The PyTorch engine's settings: the device's fast path (`fast_settings`) with this precision
        and compilation."""
        from ..devices import resolve_device

        if self.precision == "int8":
            raise DessamError("--precision int8 is the ONNX engine's; use --engine onnx, or fp32 / bf16 / fp16")
        base = fast_settings(resolve_device(self.device))
        return replace(base, precision=self.precision, compile=base.compile if self.compile is None else self.compile)

    def onnx_precision(self) -> str:
        """The ONNX engine's graphs: "fp32" or "int8"."""
        if self.precision in ("auto", "fp32"):
            return "fp32"
        if self.precision == "int8":
            return "int8"
        raise DessamError(f"--precision {self.precision}: the ONNX engine runs fp32 or int8; "
                          f"use --engine torch for {self.precision}")
