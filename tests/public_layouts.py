"""Small fixtures in the layouts public nucleus datasets ship in: DSB 2018 folders, Aperio XML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_dsb(root: Path, count: int = 3, size=(40, 48), seed: int = 0) -> list:
    """`count` DSB image folders under root, each with 1-3 square nuclei; returns their label maps."""
    rng = np.random.default_rng(seed)
    maps = []
    for index in range(count):
        name = f"img{index:02d}"
        (root / name / "images").mkdir(parents=True)
        (root / name / "masks").mkdir()
        image = np.full(size + (4,), 20, np.uint8)
        image[..., 3] = 255
        labels = np.zeros(size, np.uint32)
        for k in range(1 + index % 3):
            y, x = 4 + 12 * k, int(rng.integers(2, size[1] - 12))
            mask = np.zeros(size, np.uint8)
            mask[y:y + 8, x:x + 9] = 255
            Image.fromarray(mask).save(root / name / "masks" / f"m{k}.png")
            image[mask > 0, :3] = 200
            labels[mask > 0] = k + 1
        Image.fromarray(image, "RGBA").save(root / name / "images" / f"{name}.png")
        maps.append(labels)
    return maps


def aperio_xml(regions: list, mpp: str = "0.2527") -> str:
    """An ImageScope XML of `regions` (lists of (x, y) vertices)."""
    body = "".join(
        f'<Region Id="{i + 1}" Type="0"><Attributes/><Vertices>'
        + "".join(f'<Vertex X="{x}" Y="{y}"/>' for x, y in points)
        + "</Vertices></Region>"
        for i, points in enumerate(regions))
    return (f'<Annotations MicronsPerPixel="{mpp}"><Annotation Id="1"><Regions>{body}</Regions>'
            "</Annotation></Annotations>")


def write_aperio(root: Path, name: str = "tissue", size=(40, 50)) -> tuple:
    """An image and its XML (two squares and a two-vertex region); returns (xml folder, images folder)."""
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    Image.fromarray(np.full(size + (3,), 180, np.uint8)).save(root / "images" / f"{name}.png")
    regions = [[(5, 5), (14, 5), (14, 14), (5, 14)], [(20, 10), (29, 10), (29, 25), (20, 25)], [(1, 1), (3, 3)]]
    (root / "annotations" / f"{name}.xml").write_text(aperio_xml(regions))
    return root / "annotations", root / "images"
