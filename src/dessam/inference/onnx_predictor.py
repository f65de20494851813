"""The ONNX Runtime engine: the graphs `dessam export` writes, run without torch.

`OnnxPredictor(folder)` reads the manifest and opens the graphs (`dessam.inference.export`); it
gives the three engine calls of `dessam.inference.pipeline` (encode, detect, decode), so that
`predict`, `segment`, windows, masks, post-processing and painting are the very code of the
PyTorch engine. Nothing here imports torch or torchvision: with the graphs in the cache, `dessam
predict --engine onnx` starts in the time it takes to import numpy, scipy and ONNX Runtime.

Precision: "fp32", or "int8": the graphs' weights quantised by ONNX Runtime's dynamic quantisation
(`quantized_graph`, made once beside the fp32 graph). Providers: ONNX Runtime's CPU provider, or
CUDA's where `onnxruntime-gpu` has it and the device asks for it.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import Config, Postprocess
from ..errors import DessamError
from ..geometry.inputs import as_rgb, prepare_image, trimmed_side
from ..geometry.scale import ModelScale
from .nucleus_size import crop_inputs, estimation_crops, nucleus_side, padded_side
from .pipeline import DecodedChunk, Encoded, Pipeline, decoding_order
from ..config.runtime import InferenceSettings

PRECISIONS = ("fp32", "int8")
GRAPHS = ("encoder", "detector", "decoder", "size")
MANIFEST_NAME = "manifest.json"
INSTALL_HINT = 'install the ONNX extra: pip install "dessam[onnx]"'


def onnxruntime():
    """The `onnxruntime` module, or a one-line error saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise DessamError(f"--engine onnx needs ONNX Runtime: {INSTALL_HINT}") from None
    return onnxruntime


def open_session(path: Path, threads: Optional[int] = None, cuda: bool = False):
    """An ONNX Runtime session of the graph at `path`: `threads` intra-op threads (None: ONNX
    Runtime's choice, one per core), CUDA first when asked and available."""
    ort = onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    # idle threads wait without spinning: spinning threads slow everything down on a shared CPU
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # no notices on nodes it places on the CPU
    providers = ["CPUExecutionProvider"]
    if cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), options, providers=providers)


def quantized_graph(path: Path) -> Path:
    """The int8 twin of a graph (weights quantised per channel, activations at run time), made once
    beside it."""
    target = path.with_name(path.stem + ".int8.onnx")
    if not target.is_file():
        try:
            from onnxruntime.quantization import QuantType, quantize_dynamic
        except ImportError:
            raise DessamError(f"--precision int8 needs ONNX Runtime's quantisation tools: {INSTALL_HINT}") from None
        from ..atomic import atomic_path

        with atomic_path(target) as tmp:
            quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    return target


class OnnxPredictor(Pipeline):
    """A model exported by `dessam export` (the folder holding manifest.json), run by ONNX Runtime."""

    def __init__(self, folder, settings: Optional[InferenceSettings] = None, threads: Optional[int] = None,
                 precision: str = "fp32", cuda: bool = False, path=None):
        folder = Path(folder)
        manifest_path = folder / MANIFEST_NAME
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DessamError(f"{manifest_path}: not a readable export ({exc}); export the model again") from None
        if self.manifest.get("format") != "dessam-onnx":
            raise DessamError(f"{manifest_path}: not a dessam ONNX export; export the model with `dessam export`")
        if precision not in PRECISIONS:
            raise DessamError(f"--precision {precision}: the ONNX engine runs {' or '.join(PRECISIONS)}")
        self.folder = folder
        self.path = path
        self.precision = precision
        self.config = Config.from_dict(self.manifest["config"], str(manifest_path))
        self.scale = ModelScale.from_dict(self.manifest["scale"])
        self.settings = settings or InferenceSettings(batch_size=4, decoder_chunk=int(self.manifest["decoder_chunk"]))
        self.sam_identity = self.manifest["model"]["sam"]
        self.device = "cuda" if cuda else "cpu"
        graphs = self.manifest["graphs"]

        def session(name: str):
            if not graphs.get(name) or (name == "encoder" and not self.reads_embeddings):
                return None
            graph = folder / graphs[name]["file"]
            if precision == "int8":
                graph = quantized_graph(graph)
            return open_session(graph, threads, cuda)

        with ThreadPoolExecutor(len(GRAPHS)) as pool:  # ONNX Runtime optimises the graphs in parallel
            self.encoder, self.detector, self.decoder, self.size = pool.map(session, GRAPHS)
        token = self.manifest.get("prompt_token")
        channels = int(self.manifest["embedding"]["channels"])
        self.tokens = {True: np.float32(token).reshape(1, -1) if token else np.zeros((0, channels), np.float32),
                       False: np.zeros((0, channels), np.float32)}

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])

    def reads(self, graph: str) -> Optional[str]:
        """What the graph named reads: "images" or "embeddings" (also an export's detector from before the
        manifest said; None: the export has no such graph)."""
        found = self.manifest["graphs"].get(graph)
        return None if not found else found.get("reads", "embeddings")

    @property
    def reads_embeddings(self) -> bool:
        """Whether a graph reads the encoder's embeddings: not when the detector (if any) and the decoder
        both read the images."""
        return "embeddings" in (self.reads("decoder"), self.reads("detector"))

    def estimate_nucleus_size(self, image: np.ndarray) -> Optional[float]:
        """The typical nucleus side (pixels) of `image` that the exported size graph reads
        (`dessam.inference.nucleus_size`), or None when the export has none."""
        if self.size is None:
            return None
        fixed = int(self.manifest["graphs"]["size"]["fixed_side"])
        crops = estimation_crops(image, fixed)
        images, valid_hw = crop_inputs(crops, padded_side(crops, fixed))
        return nucleus_side(self.size.run(None, {"images": images, "valid_hw": valid_hw})[0])

    def encode(self, images: list, n_images: Optional[int] = None) -> Encoded:
        fit = self.scale.mode == "fit"
        inputs = [prepare_image(as_rgb(image), self.image_size, fit=fit) for image in images]
        batch = np.stack([item.normalised for item in inputs])
        multiple = self.manifest["graphs"]["encoder"].get("trim_multiple") if self.settings.trim_inputs else None
        side = trimmed_side([item.resized_hw for item in inputs], self.image_size, multiple)
        grid = int(self.manifest["embedding"]["grid"])
        if not self.reads_embeddings:  # zeros of their shape: the detector and the decoder read the images
            channels = int(self.manifest["embedding"]["channels"])
            return Encoded(inputs, np.broadcast_to(np.zeros((1, channels, grid, grid), np.float32),
                                                   (len(inputs), channels, grid, grid)), batch, side)
        read = batch if side is None else np.ascontiguousarray(batch[:, :, :side, :side])
        pieces = [self.encoder.run(None, {"images": read[start:start + self.settings.batch_size]})[0]
                  for start in range(0, len(read), self.settings.batch_size)]
        embeddings = np.concatenate(pieces)
        if side is not None:
            embeddings = np.pad(embeddings, ((0, 0), (0, 0), (0, grid - embeddings.shape[-2]), (0, grid - embeddings.shape[-1])))
        return Encoded(inputs, embeddings, batch, side)

    def detect(self, encoded: Encoded, postprocess: Optional[Postprocess] = None) -> list:
        if self.detector is None:
            raise DessamError(f"{self.folder}: this export holds a SAM without a detector; it segments given boxes only")
        postprocess = postprocess or self.postprocess
        threshold = postprocess.score_threshold if postprocess.score_threshold is not None else 0.0
        if self.reads("detector") == "images":  # an image encoder of its own
            name, source = "images", encoded.read_images()
        else:
            name, source = "embedding", encoded.detector_embeddings()
        out = []
        for index, item in enumerate(encoded.inputs):
            boxes, scores = self.detector.run(None, {
                name: np.ascontiguousarray(source[index:index + 1]), "valid_hw": np.float32(item.resized_hw),
                "score_threshold": np.array(threshold, np.float32), "max_detections": np.array(postprocess.max_detections, np.int64)})
            out.append(((boxes / item.scale).astype(np.float32), scores.astype(np.float64)))
        return out

    def decode(self, encoded: Encoded, boxes: list, use_token: bool = True, n_images: Optional[int] = None) -> list:
        prompts = np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) * item.scale
                                  for item, b in zip(encoded.inputs, boxes)]) if boxes else np.zeros((0, 4), np.float32)
        owner = np.concatenate([np.full(len(b), i, np.int64) for i, b in enumerate(boxes)]) if boxes else np.zeros(0, np.int64)
        manifest = self.manifest
        order = decoding_order(prompts, manifest["views"], int(manifest["embedding"]["stride"]), manifest["decoding_margin"])
        source = encoded.images if self.reads("decoder") == "images" else encoded.embeddings
        frame = (int(manifest["frame"]), int(manifest["frame"]))
        chunks = []
        for start in range(0, len(prompts), self.settings.decoder_chunk):
            chosen = order[start:start + self.settings.decoder_chunk]
            logits, iou, origins = self.decoder.run(None, {"source": source, "boxes": prompts[chosen],
                                                           "image_index": owner[chosen], "tokens": self.tokens[use_token]})
            chunks.append(DecodedChunk(chosen.tolist(), owner[chosen].tolist(), logits, iou, origins, frame))
        return chunks
