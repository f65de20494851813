"""The DES-SAM losses against computations written straight from their formulas."""

import math

import numpy as np
import pytest
import torch

from dessam.models.losses import (colour_similarity, distillation_losses, edge_aware_losses, global_level_set_loss,
                           local_pairwise_loss, rgb_to_lab, valid_region)

DIRECTIONS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _pairwise_by_formula(prob, lab, valid, colour_dilation, mask_dilation, tau=0.0):
    """sum(s * |p_i - p_j|) / max(sum(s), 1), pixel by pixel: s = exp(-|Lab_i - Lab_j| / 2) for the
    neighbour j at `colour_dilation` (0 where it is outside the crop or not valid, and below tau),
    the probability difference to the neighbour at `mask_dilation` (0 outside the crop)."""
    k = prob.shape[0]
    numerator = denominator = 0.0
    for y in range(k):
        for x in range(k):
            for dy, dx in DIRECTIONS:
                cy, cx = y + colour_dilation * dy, x + colour_dilation * dx
                if not (0 <= cy < k and 0 <= cx < k):
                    continue
                s = math.exp(-np.linalg.norm(lab[:, y, x] - lab[:, cy, cx]) / 2) * valid[cy, cx]
                if s < tau:
                    s = 0.0
                my, mx = y + mask_dilation * dy, x + mask_dilation * dx
                neighbour = prob[my, mx] if (0 <= my < k and 0 <= mx < k) else 0.0
                numerator += s * abs(prob[y, x] - neighbour)
                denominator += s
    return numerator / max(denominator, 1.0)


@pytest.mark.parametrize("colour_dilation, mask_dilation, tau", [(2, 2, 0.0), (2, 1, 0.0), (1, 1, 0.0), (2, 2, 0.3)])
def test_local_pairwise_term_uses_colour_similarity_as_a_continuous_weight(colour_dilation, mask_dilation, tau):
    rng = np.random.default_rng(0)
    k = 7
    lab = rng.uniform(0, 6, (3, k, k))  # close colours: similarities spread over (0, 1)
    prob = rng.uniform(0, 1, (k, k))
    valid = np.ones((k, k))
    valid[-2:] = 0  # the bottom rows left out
    similarity = colour_similarity(torch.tensor(lab[None], dtype=torch.float64),
                                   torch.tensor(valid[None, None]), colour_dilation)
    ours = local_pairwise_loss(torch.tensor(prob[None, None]), similarity, mask_dilation, tau).item()
    assert ours == pytest.approx(_pairwise_by_formula(prob, lab, valid, colour_dilation, mask_dilation, tau), rel=1e-9)
    assert ((similarity > 0) & (similarity < 0.3)).any(), "the crop must have pairs a threshold of 0.3 would drop"


def test_local_pairwise_term_is_zero_where_the_probability_changes_at_a_colour_edge_only_with_tau():
    lab = torch.zeros(1, 3, 6, 6, dtype=torch.float64)
    lab[:, 0, :, 3:] = 100  # a strong colour edge
    half = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    half[..., 3:] = 1  # the probability changes at the same place
    similarity = colour_similarity(lab, torch.ones(1, 1, 6, 6, dtype=torch.float64), dilation=1)
    assert local_pairwise_loss(half, similarity, 1, tau=0.3).item() == pytest.approx(0.0)
    assert 0 < local_pairwise_loss(half, similarity, 1, tau=0.0).item() < 1e-10  # exp(-50): tiny, not zero


def _chan_vese_by_formula(prob, image):
    """mean over pixels and channels of |I - c_in|^2 p + |I - c_out|^2 (1 - p)."""
    c_in = (image * prob).sum((1, 2)) / prob.sum()
    c_out = (image * (1 - prob)).sum((1, 2)) / (1 - prob).sum()
    energy = (image - c_in[:, None, None]) ** 2 * prob + (image - c_out[:, None, None]) ** 2 * (1 - prob)
    return energy.mean()


def test_global_term_is_the_chan_vese_energy():
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 255, (3, 9, 9))
    prob = rng.uniform(0, 1, (9, 9))
    ours = global_level_set_loss(torch.tensor(prob[None, None]), torch.tensor(image[None])).item()
    assert ours == pytest.approx(_chan_vese_by_formula(prob, image), rel=1e-9)
    perfect = torch.zeros(1, 1, 8, 8)
    perfect[..., 2:6, 2:6] = 1
    assert global_level_set_loss(perfect, perfect.expand(1, 3, 8, 8) * 200).item() == pytest.approx(0.0, abs=1e-4)


def _image_and_logits(size=16, seed=2):
    rng = np.random.default_rng(seed)
    rgb = rng.uniform(0, 255, (1, 3, size, size))
    logits = rng.normal(0, 2, (1, 1, size, size))
    return torch.tensor(rgb, dtype=torch.float64), torch.tensor(logits, dtype=torch.float64)


def test_edge_aware_global_term_reads_raw_rgb_and_zeroes_the_left_out_rows():
    size = 16
    rgb, logits = _image_and_logits(size)
    whole = torch.tensor([[0.0, 0, size, size]], dtype=torch.float64)  # crop == the image, pixel for pixel
    valid = valid_region([(size, size)], size, bottom_rows=2).double()
    _, glob = edge_aware_losses(logits, whole, whole, torch.zeros(1, dtype=torch.long), rgb, valid, crop=size)
    image = rgb[0].numpy().copy()
    image[:, -2:] = 0  # the authors multiply the crop by the valid region
    expected = _chan_vese_by_formula(torch.sigmoid(logits)[0, 0].numpy(), image)
    assert glob.item() == pytest.approx(expected, rel=1e-6)
    assert glob.item() > 100  # raw 0-255 colours: far from the normalised image's scale
    _, weak = edge_aware_losses(logits, whole, whole, torch.zeros(1, dtype=torch.long), rgb, valid,
                                images_normalised=rgb / 58.0, crop=size)
    assert weak.item() < glob.item() / 1000


def test_edge_aware_local_term_matches_the_formula_on_the_whole_image():
    size = 12
    rgb, logits = _image_and_logits(size, seed=3)
    rgb = rgb / 4 + 100  # similar colours
    whole = torch.tensor([[0.0, 0, size, size]], dtype=torch.float64)
    valid = valid_region([(size, size - 3)], size, bottom_rows=0).double()  # 3 padded columns on the right
    local, _ = edge_aware_losses(logits, whole, whole, torch.zeros(1, dtype=torch.long), rgb, valid, crop=size,
                                 dilation=2, mask_dilation=1)
    lab = rgb_to_lab(rgb)[0].numpy()
    prob = torch.sigmoid(logits)[0, 0].numpy()
    assert local.item() == pytest.approx(_pairwise_by_formula(prob, lab, valid[0, 0].numpy(), 2, 1), rel=1e-6)


def test_valid_region_leaves_out_the_padding_and_the_bottom_rows():
    valid = valid_region([(64, 48), (32, 64)], 64, bottom_rows=10)
    assert valid.shape == (2, 1, 64, 64)
    assert valid[0, 0, :54, :48].all() and not valid[0, 0, 54:].any() and not valid[0, 0, :, 48:].any()
    removed = int(10 * 32 / 64)  # scaled to the image's height in the padded frame, as the authors do
    assert valid[1, 0, : 32 - removed].all() and not valid[1, 0, 32 - removed:].any()


def test_the_student_crop_box_can_differ_from_the_colour_crop_box():
    size = 32
    rgb, logits = _image_and_logits(size, seed=4)
    annotated = torch.tensor([[4.0, 4, 20, 20]], dtype=torch.float64)
    proposal = torch.tensor([[8.0, 6, 26, 22]], dtype=torch.float64)
    valid = torch.ones(1, 1, size, size, dtype=torch.float64)
    index = torch.zeros(1, dtype=torch.long)
    same = edge_aware_losses(logits, annotated, annotated, index, rgb, valid, crop=16)
    moved = edge_aware_losses(logits, proposal, annotated, index, rgb, valid, crop=16)
    assert same[0].item() != pytest.approx(moved[0].item())


def test_distillation_sums_per_prompt_bce_and_dice():
    torch.manual_seed(0)
    student = torch.randn(3, 1, 8, 8)
    teacher = torch.randn(3, 1, 8, 8)
    bce, dice = distillation_losses(student, teacher, images=1)
    target = (teacher > 0).float()
    p = torch.sigmoid(student)
    per_prompt_bce = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).flatten(1).mean(1)
    scaled_p, scaled_t = p.flatten(1) / 1000, target.flatten(1) / 1000  # the authors' dice_loss: scale 1000, eps 1e-6
    per_prompt_dice = 1 - (2 * (scaled_p * scaled_t * 1000).sum(1) + 1e-6) / (scaled_p.sum(1) + scaled_t.sum(1) + 1e-6)
    assert bce.item() == pytest.approx(per_prompt_bce.sum().item(), rel=1e-5)
    assert dice.item() == pytest.approx(per_prompt_dice.sum().item(), rel=1e-5)


def test_rgb_to_lab_matches_scikit_image():
    from skimage.color import rgb2lab

    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3)).astype(np.uint8)
    ours = rgb_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
    assert np.allclose(ours, rgb2lab(rgb), atol=0.05)
