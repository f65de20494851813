"""Generic synthetic "anything" scenes for pre-training the bundled default teacher.

Each scene is a random background (flat, gradient, smooth or grainy texture) with a few to a few
dozen random objects painted on top: ellipses, star-shaped blobs, polygons and curvy shapes, with
random colours, textures, shading, rims and translucency, sometimes nested (a small object inside a
larger one). Some scenes add crowds: groups of objects of one look (similar colour, size, texture
and shape family) packed so that they touch or overlap, with weak boundaries between neighbours,
and sometimes sitting inside a larger translucent object. Later objects occlude earlier ones, and every object is labelled by its *visible* part;
a visible part that the occluders cut into pieces becomes one object per piece. The whole image is
then blurred and noised a little.

Nothing here imitates cytology on purpose: the teacher must learn "the thing inside this box" in
general, so that dessam's cytology scenes stay a fair test of it.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MIN_DIAMETER = 6.0
MAX_DIAMETER = 80.0
MIN_VISIBLE_AREA = 12  # visible pieces smaller than this become background
CROWD_CHANCE = 0.5  # of a scene holding crowds of similar touching objects


def make_anything_scene(rng: np.random.Generator, size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """One random scene: (image uint8 HxWx3, labels uint16 HxW with 0 = background).

    Every label is one 4-connected region of at least `MIN_VISIBLE_AREA` pixels.
    """
    image = _background(rng, size)
    labels = np.zeros((size, size), np.int32)
    next_id = 1
    crowded = rng.random() < CROWD_CHANCE
    for _ in range(int(rng.integers(4, 61) if not crowded else rng.integers(0, 25))):
        diameter = float(np.exp(rng.uniform(np.log(MIN_DIAMETER), np.log(MAX_DIAMETER))))
        mask = _shape(rng, diameter)
        top = int(rng.integers(-mask.shape[0] // 3, size - mask.shape[0] // 2))
        left = int(rng.integers(-mask.shape[1] // 3, size - mask.shape[1] // 2))
        _paint(rng, image, labels, mask, top, left, next_id)
        next_id += 1
        if diameter > 16 and rng.random() < 0.3:  # a smaller object nested inside this one
            inner = _shape(rng, diameter * rng.uniform(0.2, 0.55))
            dy = top + (mask.shape[0] - inner.shape[0]) // 2 + int(rng.integers(-2, 3))
            dx = left + (mask.shape[1] - inner.shape[1]) // 2 + int(rng.integers(-2, 3))
            _paint(rng, image, labels, inner, dy, dx, next_id)
            next_id += 1
    if crowded:
        for _ in range(int(rng.integers(1, 4))):
            next_id = _crowd(rng, image, labels, next_id)
    image = _finish(rng, image)
    return image, _visible_pieces(labels)


def instance_boxes(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, boxes) of a label map; boxes are x1, y1, x2, y2 pixel edges (x2 = last column + 1)."""
    ids, boxes = [], []
    for index, region in enumerate(ndimage.find_objects(labels)):
        if region is None:
            continue
        ids.append(index + 1)
        boxes.append((region[1].start, region[0].start, region[1].stop, region[0].stop))
    return np.asarray(ids, np.int64), np.asarray(boxes, np.float32).reshape(-1, 4)


# ---------------------------------------------------------------------------------------------
# pieces


def _smooth_noise(rng: np.random.Generator, shape: tuple, cells: int) -> np.ndarray:
    """Smooth random field in [-1, 1] roughly `cells` bumps across, of the given 2-D shape."""
    coarse = rng.uniform(-1.0, 1.0, (cells + 2, cells + 2))
    zoom = (shape[0] / cells, shape[1] / cells)
    field = ndimage.zoom(coarse, zoom, order=1 if rng.random() < 0.5 else 3, mode="nearest")
    return np.clip(field[: shape[0], : shape[1]], -1.0, 1.0)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.3:  # greyish
        return np.full(3, rng.uniform(0.0, 1.0)) + rng.normal(0, 0.04, 3)
    return rng.uniform(0.0, 1.0, 3)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = _random_colour(rng)
    image = np.broadcast_to(base, (size, size, 3)).astype(np.float32).copy()
    kind = rng.random()
    if kind < 0.35:  # linear gradient towards a second colour
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / size
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        ramp = (ramp - ramp.min()) / max(np.ptp(ramp), 1e-6)
        image += (ramp[..., None] * (_random_colour(rng) - base)).astype(np.float32)
    elif kind < 0.8:  # smooth colour texture
        for channel in range(3):
            image[..., channel] += 0.25 * rng.random() * _smooth_noise(rng, (size, size), int(rng.integers(2, 12)))
    if rng.random() < 0.3:  # grain
        grain = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), rng.uniform(0.5, 2.0))
        image += (rng.uniform(0.02, 0.1) * grain / max(grain.std(), 1e-6))[..., None].astype(np.float32)
    return image


def _shape(rng: np.random.Generator, diameter: float) -> np.ndarray:
    """A boolean patch holding one random shape about `diameter` pixels across."""
    radius = diameter / 2
    half = int(np.ceil(radius * 1.3)) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    u = np.cos(angle) * xx + np.sin(angle) * yy
    v = -np.sin(angle) * xx + np.cos(angle) * yy
    aspect = rng.uniform(0.35, 1.0)
    kind = rng.random()
    if kind < 0.3:  # ellipse
        mask = (u / radius) ** 2 + (v / (radius * aspect)) ** 2 <= 1.0
    elif kind < 0.6:  # star-shaped blob with a wobbly outline
        theta = np.arctan2(v, u)
        rho = np.hypot(u, v / aspect)
        outline = np.ones_like(theta)
        for k in range(2, 7):
            outline += rng.uniform(0, 0.3 / k * 2) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
        mask = rho <= radius * outline / outline.max()
    elif kind < 0.8:  # polygon
        count = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * np.pi, count))
        radii = radius * rng.uniform(0.5, 1.0, count)
        mask = _polygon(u, v * 1.0, radii * np.cos(angles), radii * np.sin(angles) * aspect)
    else:  # curvy: thresholded smooth noise inside a soft ellipse
        field = _smooth_noise(rng, yy.shape, int(rng.integers(2, 6)))
        window = 1.0 - ((u / radius) ** 2 + (v / (radius * aspect)) ** 2)
        mask = window + 0.6 * field > 0.2
        pieces, count = ndimage.label(mask)
        if count > 1:
            mask = pieces == 1 + int(np.argmax(ndimage.sum(mask, pieces, range(1, count + 1))))
    if not mask.any():
        mask[half, half] = True
    return mask


def _polygon(x: np.ndarray, y: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Points (x, y) inside the polygon with vertices (px, py), by the even-odd crossing rule."""
    inside = np.zeros(x.shape, bool)
    for i in range(len(px)):
        x0, y0, x1, y1 = px[i - 1], py[i - 1], px[i], py[i]
        crosses = (y0 > y) != (y1 > y)
        at = x0 + (y - y0) * (x1 - x0) / ((y1 - y0) if y1 != y0 else 1e-9)
        inside ^= crosses & (x < at)
    return inside


def _random_style(rng: np.random.Generator) -> dict:
    """How an object looks: colour, texture, shading towards the border, rim, opacity."""
    return {
        "colour": _random_colour(rng).astype(np.float32),
        "texture": rng.uniform(0.05, 0.4) if rng.random() < 0.6 else 0.0,
        "texture_scale": rng.uniform(3, 15),
        "shading": rng.uniform(-0.4, 0.4) if rng.random() < 0.4 else 0.0,
        "rim": (_random_colour(rng), int(rng.integers(1, 3))) if rng.random() < 0.25 else None,
        "alpha": 1.0 if rng.random() < 0.7 else rng.uniform(0.45, 0.9),
    }


def _paint(rng, image, labels, mask, top, left, label, style=None) -> None:
    """Paint `mask` (placed at top/left, clipped to the image) with `style` (default: a random one)."""
    style = style or _random_style(rng)
    size_y, size_x = labels.shape
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + mask.shape[0], size_y), min(left + mask.shape[1], size_x)
    if y1 <= y0 or x1 <= x0:
        return
    mask = mask[y0 - top : y1 - top, x0 - left : x1 - left]
    if not mask.any():
        return
    shape = mask.shape
    fill = np.broadcast_to(np.clip(style["colour"], 0.0, 1.0), shape + (3,)).astype(np.float32).copy()
    if style["texture"]:
        cells = max(2, int(max(shape) / style["texture_scale"]))
        fill *= (1.0 + style["texture"] * _smooth_noise(rng, shape, cells))[..., None]
    if style["shading"]:
        depth = ndimage.distance_transform_edt(mask)
        depth = depth / max(depth.max(), 1.0)
        fill *= (1.0 + style["shading"] * (1.0 - depth))[..., None]
    if style["rim"] is not None:
        rim_colour, width = style["rim"]
        fill[mask & ~ndimage.binary_erosion(mask, iterations=width)] = rim_colour
    alpha = style["alpha"]
    window = image[y0:y1, x0:x1]
    window[mask] = alpha * fill[mask] + (1.0 - alpha) * window[mask]
    labels[y0:y1, x0:x1][mask] = label


def _crowd(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, next_id: int) -> int:
    """Paint a group of look-alike objects that touch or overlap; returns the next free label.

    Members share one style (colour jittered a little, so boundaries between neighbours are weak)
    and a size; each is placed next to an earlier member at a distance below their diameter.
    Sometimes the group first gets a larger translucent object around it (labelled too).
    """
    size = labels.shape[0]
    diameter = float(np.exp(rng.uniform(np.log(8.0), np.log(36.0))))
    count = int(rng.integers(3, 26))
    centre = rng.uniform(0.15 * size, 0.85 * size, 2)
    if rng.random() < 0.35:  # a translucent host around the group
        host = _shape(rng, diameter * np.sqrt(count) * rng.uniform(1.2, 1.8))
        style = _random_style(rng)
        style["alpha"] = rng.uniform(0.2, 0.6)
        _paint(rng, image, labels, host, int(centre[0]) - host.shape[0] // 2, int(centre[1]) - host.shape[1] // 2,
               next_id, style)
        next_id += 1
    style = _random_style(rng)
    spread = rng.uniform(0.0, 0.08)  # colour difference between members
    closeness = rng.uniform(0.55, 0.95)  # centre distance over diameter
    points = [centre]
    for _ in range(count - 1):
        for _attempt in range(8):
            anchor = points[int(rng.integers(len(points)))]
            angle = rng.uniform(0, 2 * np.pi)
            candidate = anchor + diameter * closeness * rng.uniform(0.9, 1.15) * np.array([np.sin(angle), np.cos(angle)])
            if min(np.hypot(*(candidate - p)) for p in points) >= 0.5 * diameter * closeness:
                points.append(candidate)
                break
    for point in points:
        member = dict(style, colour=style["colour"] + rng.normal(0, spread, 3).astype(np.float32))
        mask = _shape(rng, diameter * rng.uniform(0.8, 1.2))
        _paint(rng, image, labels, mask, int(point[0]) - mask.shape[0] // 2, int(point[1]) - mask.shape[1] // 2,
               next_id, member)
        next_id += 1
    return next_id


def _finish(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    sigma = rng.uniform(0.0, 1.5)
    if sigma > 0.3:
        image = ndimage.gaussian_filter(image, (sigma, sigma, 0))
    image = image + rng.normal(0, rng.uniform(0.0, 0.05), image.shape).astype(np.float32)
    return (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def _visible_pieces(labels: np.ndarray) -> np.ndarray:
    """Relabel so that every 4-connected visible piece of at least MIN_VISIBLE_AREA is one object."""
    out = np.zeros(labels.shape, np.uint16)
    next_id = 1
    for index, region in enumerate(ndimage.find_objects(labels)):
        if region is None:
            continue
        pieces, count = ndimage.label(labels[region] == index + 1)
        for piece in range(1, count + 1):
            where = pieces == piece
            if where.sum() >= MIN_VISIBLE_AREA:
                out[region][where] = next_id
                next_id += 1
    return out
