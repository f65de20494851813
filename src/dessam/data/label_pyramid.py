"""A slide-sized instance label image written from nuclei given one by one, in any order.

`LabelPyramidWriter` keeps each nucleus as its box and bit-packed mask in an unnamed temporary
file, indexed by the band of rows where it starts. On `close` it paints level 0 band by band
from that file (where nuclei overlap, the one added later wins, or, with `overlap_winner`, the
lower- or the higher-scoring one, as `dessam.inference.instances.masks_to_labels` paints) and writes
a tiled, pyramidal OME-TIFF (uint32, 0 = background, zlib; see `dessam.data.pyramid_tiff`).
Memory: one band of level 0 (``tile`` rows x the slide width x 4 bytes) plus one 8-byte index
entry per nucleus; the temporary file holds about an eighth of a byte per mask pixel.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
import uuid
from array import array
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from .nucleus import Nucleus
from .pyramid_tiff import write_pyramid_tiff

_HEADER = struct.Struct("<Iqqiid")  # id, x1, y1, width, height, score
MAX_ID = np.iinfo(np.uint32).max


class LabelPyramidWriter:
    """Collect nuclei with `add`, then `close` writes `path`; as a context manager it writes on
    success and leaves nothing behind after an error."""

    def __init__(self, path: str | os.PathLike, width: int, height: int, pixel_size_um: Optional[float] = None,
                 tile: int = 512, overlap_winner: Optional[str] = None):
        if overlap_winner not in (None, "lower-score", "higher-score"):
            raise ValueError(f"overlap_winner must be lower-score, higher-score or None; got {overlap_winner!r}")
        self.overlap_winner = overlap_winner
        self.path = Path(path)
        self.width, self.height, self.tile = int(width), int(height), int(tile)
        self.pixel_size_um = pixel_size_um
        self.count = 0
        self._spill = tempfile.TemporaryFile(dir=self.path.parent if self.path.parent.is_dir() else None)
        self._bands: dict[int, array] = {}  # band index -> offsets of the records starting in it
        self._tallest = 0

    def add(self, nucleus: Nucleus) -> None:
        """Keep one nucleus (its box in level-0 pixels; parts outside the slide are cut off)."""
        if nucleus.id > MAX_ID:
            raise ValueError(f"nucleus id {nucleus.id} does not fit a uint32 label image")
        x1, y1, x2, y2 = nucleus.box
        offset = self._spill.seek(0, os.SEEK_END)
        self._spill.write(_HEADER.pack(nucleus.id, x1, y1, x2 - x1, y2 - y1, float(nucleus.score)))
        self._spill.write(np.packbits(nucleus.mask, axis=None).tobytes())
        self._bands.setdefault(max(y1, 0) // self.tile, array("q")).append(offset)
        self._tallest = max(self._tallest, y2 - y1)
        self.count += 1

    def _records(self, y0: int, y1: int) -> Iterator[tuple[int, int, int, np.ndarray]]:
        """(id, x1, y1, mask) of the nuclei reaching into rows [y0, y1), in the order to paint them."""
        records = list(self._reach(y0, y1))
        if self.overlap_winner is not None:  # stable: equal scores keep the order added
            records.sort(key=lambda record: -record[1] if self.overlap_winner == "lower-score" else record[1])
        for record in records:
            yield record[0], *record[2:]

    def _reach(self, y0: int, y1: int) -> Iterator[tuple]:
        """(id, score, x1, y1, mask) of the nuclei reaching into rows [y0, y1), in the order added."""
        first = max(0, (y0 - self._tallest) // self.tile)
        offsets = sorted(o for band in range(first, (y1 - 1) // self.tile + 1) for o in self._bands.get(band, ()))
        for offset in offsets:
            self._spill.seek(offset)
            nucleus_id, bx, by, w, h, score = _HEADER.unpack(self._spill.read(_HEADER.size))
            if by < y1 and by + h > y0:
                bits = np.frombuffer(self._spill.read((w * h + 7) // 8), np.uint8)
                yield nucleus_id, score, bx, by, np.unpackbits(bits, count=w * h).reshape(h, w).astype(bool)

    def _band(self, y0: int, y1: int) -> np.ndarray:
        out = np.zeros((y1 - y0, self.width), np.uint32)
        for nucleus_id, bx, by, mask in self._records(y0, y1):
            # the part of the mask inside rows [y0, y1) and the slide's columns
            r0, r1 = max(y0 - by, 0), min(y1 - by, mask.shape[0])
            c0, c1 = max(-bx, 0), min(self.width - bx, mask.shape[1])
            if r1 > r0 and c1 > c0:
                region = out[by + r0 - y0:by + r1 - y0, bx + c0:bx + c1]
                region[mask[r0:r1, c0:c1]] = nucleus_id
        return out

    def _bands_iter(self) -> Iterator[np.ndarray]:
        for y0 in range(0, self.height, self.tile):
            yield self._band(y0, min(y0 + self.tile, self.height))

    def close(self) -> Path:
        """Write the label image and free the temporary file."""
        try:
            write_pyramid_tiff(self.path, self._bands_iter(), self.width, self.height, channels=1, dtype=np.uint32,
                               labels=True, tile=self.tile, layout="ome", pixel_size_um=self.pixel_size_um,
                               uuid=self.content_uuid())
        finally:
            self.discard()
        return self.path

    def content_uuid(self) -> str:
        """A UUID that follows from what the file will hold (size, pixel size, tile, overlap rule and
        every nucleus added, in order), so that the same nuclei write the same file byte for byte."""
        digest = hashlib.sha256(repr((self.width, self.height, self.pixel_size_um, self.tile,
                                      self.overlap_winner, self.count)).encode())
        self._spill.seek(0)
        for chunk in iter(lambda: self._spill.read(1 << 20), b""):
            digest.update(chunk)
        return str(uuid.UUID(bytes=digest.digest()[:16], version=5))

    def discard(self) -> None:
        """Forget the nuclei without writing anything."""
        if not self._spill.closed:
            self._spill.close()

    def __enter__(self) -> "LabelPyramidWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self.discard()
