"""On-disk cache of SAM image embeddings.

The encoder is frozen and training applies no photometric augmentation, so each training
image's embedding never changes: it is computed once and stored as float16, keyed by the resized
image's content and the encoder's weights. Every entry carries a SHA-256 of its bytes and is
verified before use (digest, then a finite float16 array of the expected shape, read without
unpickling); a damaged entry is recomputed, never trusted.
"""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..atomic import write_bytes_atomic


class EmbeddingCache:
    def __init__(self, directory: str | Path, encoder_key: str):
        self.directory = Path(directory)
        self.encoder_key = encoder_key
        self.hits = 0
        self.misses = 0
        self.rejected = 0

    def key(self, resized_image: np.ndarray) -> str:
        digest = hashlib.sha256()
        digest.update(self.encoder_key.encode())
        digest.update(str(resized_image.shape).encode())
        digest.update(np.ascontiguousarray(resized_image).tobytes())
        return digest.hexdigest()

    def _paths(self, key: str):
        folder = self.directory / key[:2]
        return folder / f"{key}.npy", folder / f"{key}.sha256"

    def load(self, key: str, expected_shape: Optional[tuple] = None) -> Optional[torch.Tensor]:
        data_path, digest_path = self._paths(key)
        if not (data_path.is_file() and digest_path.is_file()):
            return None
        data = data_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest_path.read_text(errors="replace").strip():
            self.rejected += 1
            return None
        array = _float16_array(data, expected_shape)
        if array is None:
            self.rejected += 1
            return None
        return torch.from_numpy(array)

    def store(self, key: str, embedding: torch.Tensor) -> None:
        buffer = io.BytesIO()
        np.save(buffer, embedding.detach().to("cpu", torch.float16).numpy(), allow_pickle=False)
        data = buffer.getvalue()
        data_path, digest_path = self._paths(key)
        write_bytes_atomic(data_path, data)
        write_bytes_atomic(digest_path, hashlib.sha256(data).hexdigest().encode())

    def get_or_compute(self, key: str, compute: Callable[[], torch.Tensor],
                       expected_shape: Optional[tuple] = None) -> torch.Tensor:
        cached = self.load(key, expected_shape)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        embedding = compute().to(torch.float16).cpu()
        self.store(key, embedding)
        return embedding


def _float16_array(data: bytes, expected_shape: Optional[tuple]) -> Optional[np.ndarray]:
    """The finite float16 array stored in `data` (.npy bytes), or None for anything else.

    The header is checked before any array is allocated, so a forged shape cannot exhaust memory.
    """
    buffer = io.BytesIO(data)
    try:
        if np.lib.format.read_magic(buffer) != (1, 0):
            return None
        shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(buffer)
    except ValueError:
        return None
    if dtype != np.float16 or fortran_order or (expected_shape is not None and shape != tuple(expected_shape)):
        return None
    values = np.frombuffer(data, dtype=np.float16, offset=buffer.tell())
    if values.size != math.prod(shape) or not np.isfinite(values).all():
        return None
    return values.reshape(shape).copy()
