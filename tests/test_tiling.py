import numpy as np
import pytest
from scipy import ndimage

from dessam.errors import DessamError
from dessam.geometry.tiling import tile_starts, tile_windows
from dessam.inference.instances import Instances
from dessam.inference.instances import masks_to_labels
from dessam.inference.windowed import merge_windows

TILE, OVERLAP = 96, 32


def merged_instances(image, predict, tile, overlap) -> Instances:
    """Every window of `image` through `predict` (window -> boxes, scores, full window masks), merged."""
    windows = tile_windows(image.shape[:2], tile, overlap)
    found = [(w, Instances.from_masks(*predict(image[w.rows, w.cols]))) for w in windows]
    return merge_windows(found, image.shape[:2])


def predict_tiled(image, predict, tile, overlap, progress=False):
    """(boxes, scores, full-size masks) of the merged instances, highest score first (for checks)."""
    merged = merged_instances(image, predict, tile, overlap)
    masks = np.array([merged.mask(k) for k in range(len(merged))], dtype=bool).reshape(-1, *image.shape[:2])
    return merged.boxes, merged.scores, masks


def _disk_image(height=300, width=260, seed=0):
    """Dark non-touching disks (radius 5-10) on a light background, many across seams."""
    rng = np.random.default_rng(seed)
    seams_y = [s + OVERLAP // 2 for s in tile_starts(height, TILE, OVERLAP)[1:]]
    seams_x = [s + OVERLAP // 2 for s in tile_starts(width, TILE, OVERLAP)[1:]]
    centres = [(y, x) for y in seams_y for x in seams_x]  # on seam crossings
    centres += [(y, rng.integers(10, width - 10)) for y in seams_y for _ in range(3)]
    centres += [(rng.integers(10, height - 10), x) for x in seams_x for _ in range(3)]
    centres += [tuple(rng.integers(0, (height, width))) for _ in range(150)]  # some cut by the image edge
    yy, xx = np.mgrid[:height, :width]
    image = np.full((height, width, 3), 220, dtype=np.uint8)
    placed = []
    for cy, cx in centres:
        radius = rng.uniform(5, 10)
        if all(np.hypot(cy - py, cx - px) > radius + pr + 3 for py, px, pr in placed):
            placed.append((cy, cx, radius))
            image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2] = rng.integers(20, 90)
    return image, len(placed)


def _blob_predictor(seed=None):
    """Dark connected components as instances; scores random per call when `seed` is given."""
    rng = np.random.default_rng(seed)
    calls = []

    def predict(window):
        calls.append(window.shape)
        components, count = ndimage.label(window[..., 0] < 128)
        masks = components[None] == np.arange(1, count + 1)[:, None, None]
        boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(components)])
        scores = rng.uniform(0.5, 1.0, count) if seed is not None else masks.sum(axis=(1, 2)) / 400.0
        return boxes.reshape(-1, 4), scores, masks

    predict.calls = calls
    return predict


def _match(pred_labels, true_labels):
    """(true positives, predictions, truths, duplicates) at IoU > 0.5 between label maps."""
    pred_ids = np.unique(pred_labels)[1:]
    true_ids = np.unique(true_labels)[1:]
    pairs = np.stack([pred_labels.ravel(), true_labels.ravel()], axis=1)
    pair_ids, shared = np.unique(pairs[(pairs > 0).all(axis=1)], axis=0, return_counts=True)
    pred_area = np.bincount(pred_labels.ravel())
    true_area = np.bincount(true_labels.ravel())
    matched = {}
    for (p, t), inter in zip(pair_ids, shared):
        if inter / (pred_area[p] + true_area[t] - inter) > 0.5:
            matched.setdefault(t, []).append(p)
    duplicates = sum(len(ps) - 1 for ps in matched.values())
    return len(matched), len(pred_ids), len(true_ids), duplicates


def _one_pass_labels(image, predict):
    _, scores, masks = predict(image)
    return masks_to_labels(masks, scores)


@pytest.mark.parametrize("seed", [0, 1])
def test_tiled_prediction_matches_one_pass(seed):
    image, placed = _disk_image(seed=seed)
    predict = _blob_predictor(seed=seed + 10)
    boxes, scores, masks = predict_tiled(image, predict, tile=TILE, overlap=OVERLAP, progress=False)
    assert len(predict.calls) == len(tile_starts(300, TILE, OVERLAP)) * len(tile_starts(260, TILE, OVERLAP))
    assert all(shape[:2] == (TILE, TILE) for shape in predict.calls)
    truth = _one_pass_labels(image, _blob_predictor())
    assert len(np.unique(truth)) - 1 == placed
    assert masks.shape == (len(scores),) + image.shape[:2] and boxes.shape == (len(scores), 4)
    assert np.all(np.diff(scores) <= 0)
    # No nucleus appears twice: every pixel belongs to at most one kept instance.
    assert masks.sum(axis=0).max() == 1
    tp, n_pred, n_true, duplicates = _match(masks_to_labels(masks, scores), truth)
    assert duplicates == 0
    f1 = 2 * tp / (n_pred + n_true)
    assert f1 >= 0.98, (tp, n_pred, n_true)
    # Boxes are mapped back to image coordinates: each encloses its own mask.
    for box, mask in zip(boxes, masks):
        rows, cols = np.nonzero(mask)
        assert (box[0], box[1], box[2], box[3]) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)


@pytest.mark.parametrize("winner", ["lower-score", "higher-score"])
def test_painting_the_crops_equals_painting_full_masks(winner):
    image, _ = _disk_image(seed=3)
    _, scores, masks = predict_tiled(image, _blob_predictor(seed=4), tile=TILE, overlap=OVERLAP)
    labels = merged_instances(image, _blob_predictor(seed=4), TILE, OVERLAP).paint(winner)
    assert labels.dtype == np.uint16
    assert np.array_equal(labels, masks_to_labels(masks, scores, winner))


def test_whole_copy_beats_cut_copies_and_overlapping_neighbours_survive():
    """A nucleus cut by an inner window edge is replaced by the whole copy of the next window,
    while two nuclei of one window that overlap each other are both kept."""
    image = np.full((100, 140, 3), 220, dtype=np.uint8)
    image[40:60, 66:84] = 30  # straddles the seam between the two windows (x = 60..80 overlap)
    image[10:20, 5:15] = 30

    def predict(window):
        components, count = ndimage.label(window[..., 0] < 128)
        masks = [components == i for i in range(1, count + 1)]
        if count:  # a second instance overlapping the window's first blob
            masks.append(np.roll(masks[0], 3, axis=1))
        masks = np.array(masks, dtype=bool).reshape(-1, *window.shape[:2])
        boxes = np.zeros((len(masks), 4))
        return boxes, np.linspace(0.9, 0.6, len(masks)), masks

    _, _, masks = predict_tiled(image, predict, tile=80, overlap=20, progress=False)
    straddling = [m for m in masks if m[50, 75]]
    whole = np.zeros(image.shape[:2], bool)
    whole[40:60, 66:84] = True
    assert any(np.array_equal(m, whole) for m in straddling)
    assert not any(m.sum() < whole.sum() and (m & whole).sum() == m.sum() for m in straddling)
    assert sum(m[10:20, 5:15].any() for m in masks) == 2  # the top-left blob and its overlapping twin


def test_small_image_is_one_window():
    image, _ = _disk_image(height=50, width=70)
    predict = _blob_predictor()
    _, scores, masks = predict_tiled(image, predict, tile=TILE, overlap=OVERLAP, progress=False)
    assert predict.calls == [(50, 70, 3)]
    _, one_scores, one_masks = _blob_predictor()(image)
    assert len(scores) == len(one_scores)
    assert np.array_equal(masks_to_labels(masks, scores), masks_to_labels(one_masks, one_scores))


def test_tile_starts_cover_the_axis_with_the_last_flush():
    for length in (1, 95, 96, 97, 160, 161, 500):
        starts = tile_starts(length, TILE, OVERLAP)
        assert starts[0] == 0 and min(length, starts[-1] + TILE) == length
        if length > TILE:
            assert starts[-1] == length - TILE
            ends = [s + TILE for s in starts]
            assert all(nxt <= end - OVERLAP for nxt, end in zip(starts[1:], ends))


@pytest.mark.parametrize("tile, overlap", [(0, 0), (64, 64), (64, -1)])
def test_bad_settings_are_user_errors(tile, overlap):
    with pytest.raises(DessamError):
        tile_windows((10, 10), tile=tile, overlap=overlap)


def test_an_instance_hidden_under_two_same_window_neighbours_is_not_kept_twice():
    """Each window returns three stacked masks; the middle one overlaps both others by about half.

    Its copy from the second window must be recognised as a duplicate by its overlap with the
    kept copy's own mask, even though the other instances claimed most of its pixels first.
    """
    def stacked(window):
        h, w = window.shape[:2]
        columns = window[0, :, 0] > 0  # the image marks columns 70-99
        masks = np.zeros((3, h, w), dtype=bool)
        for k, (r0, r1) in enumerate(((0, 35), (20, 51), (36, 71))):
            masks[k, r0:r1] = columns
        boxes = np.array([[m.nonzero()[1].min(), m.nonzero()[0].min(), m.nonzero()[1].max() + 1, m.nonzero()[0].max() + 1]
                          for m in masks], dtype=float)
        return boxes, np.array([0.9, 0.5, 0.8]), masks

    image = np.zeros((128, 192, 3), dtype=np.uint8)
    image[:, 70:100] = 255
    boxes, scores, masks = predict_tiled(image, stacked, tile=128, overlap=64, progress=False)
    flat = masks.reshape(len(masks), -1)
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            shared = (flat[i] & flat[j]).sum()
            assert shared <= 0.5 * min(flat[i].sum(), flat[j].sum()), (i, j)
    assert len(masks) == 3


def test_run_windows_walks_the_chosen_windows_batch_by_batch():
    """The one loop over a plan's windows: the chosen windows in batches, each read once, one result
    per window in window order, progress after each batch, and a stop raised from it ends the walk."""
    from dessam.geometry.plan import WindowPlan
    from dessam.geometry.scale import ModelScale
    from dessam.inference.windowed import run_windows, window_reader

    image = np.arange(300 * 500, dtype=np.float32).reshape(300, 500)
    plan = WindowPlan.for_image(image.shape, 128, ModelScale("fixed"), tile=True, overlap=16)
    assert len(plan.windows) > 6
    chosen = [0, 2, 3, 5, 6]
    batches, progress = [], []

    def work(batch, images):
        batches.append(list(batch))
        for index, window_image in zip(batch, images):
            window = plan.windows[index]
            np.testing.assert_array_equal(window_image, image[window.rows, window.cols])
        return [f"result {index}" for index in batch]

    out = run_windows(plan, 2, window_reader(plan, image), work, chosen, on_window=lambda done, total: progress.append((done, total)))
    assert batches == [[0, 2], [3, 5], [6]]
    assert out == [(index, f"result {index}") for index in chosen]
    assert progress == [(2, 5), (4, 5), (5, 5)]

    class Stop(Exception):
        pass

    def stop_after_first(done, total):
        raise Stop

    batches.clear()
    with pytest.raises(Stop):
        run_windows(plan, 2, window_reader(plan, image), work, chosen, on_window=stop_after_first)
    assert batches == [[0, 2]]
