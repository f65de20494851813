"""DES-SAM model: what trains, the token, the teacher, the losses."""

import numpy as np
import pytest
import torch
from scenes import make_nuclei_scene, tiny_config

from dessam.data.anything import instance_boxes
from dessam.geometry.inputs import prepare_image
from dessam.models.losses import edge_aware_losses, valid_region
from dessam.models.dessam import DESSAM
from dessam.models.sam import build_sam


def _model(prompt_token=True, detector_encoder="teacher"):
    config = tiny_config()
    config = config.replace({"model.prompt_token": prompt_token, "model.detector_encoder": detector_encoder})
    torch.manual_seed(0)
    return DESSAM(build_sam("tiny", image_size=config.model.image_size), config)


def _batch(model, seed=0):
    image, labels = make_nuclei_scene(np.random.default_rng(seed), 128)
    inputs = prepare_image(image, model.image_size)
    embedding = model.encode(torch.from_numpy(inputs.normalised[None]))
    boxes = torch.from_numpy(instance_boxes(labels)[1]) * torch.from_numpy(inputs.scale)
    return embedding, torch.from_numpy(inputs.rgb[None]), torch.from_numpy(inputs.normalised[None]), [boxes], [inputs.resized_hw]


def test_only_neck_rpn_roi_head_and_token_are_trainable():
    model = _model()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable, "something must train"
    assert all(n.startswith(("neck.", "detector.rpn.", "detector.roi_heads.", "decoder.prompt_token.")) for n in trainable)
    for prefix in ("neck.", "detector.rpn.", "detector.roi_heads.", "decoder.prompt_token."):
        assert any(n.startswith(prefix) for n in trainable), prefix
    assert not any(p.requires_grad for p in model.sam.parameters())
    # the trainable state dict is exactly those parameters (plus no SAM weights)
    assert set(model.trainable_state_dict()) >= trainable
    assert not any(k.startswith("sam.") for k in model.trainable_state_dict())


def test_without_token_the_student_is_exactly_the_teacher():
    model = _model(prompt_token=False)
    embedding, *_ , boxes, _ = _batch(model)
    boxes = boxes[0]
    student = model.decoder(embedding, boxes, use_token=True).logits
    teacher = model.decoder(embedding, boxes, use_token=False).logits
    assert torch.equal(student, teacher)
    # and the teacher is SAM's own single-mask output
    sam = model.sam
    sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
    official, _ = sam.mask_decoder(embedding, sam.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False)
    assert torch.allclose(student, official, atol=1e-5)


def test_with_token_the_student_differs_from_the_teacher():
    model = _model(prompt_token=True)
    embedding, *_, boxes, _ = _batch(model)
    student = model.decoder(embedding, boxes[0], use_token=True).logits
    teacher = model.decoder(embedding, boxes[0], use_token=False).logits
    assert student.shape == teacher.shape == (len(boxes[0]), 1, 64, 64)
    assert not torch.equal(student, teacher)


def test_all_losses_are_finite_and_only_trainable_parts_get_gradients():
    model = _model().train()
    losses = model(*_batch(model))
    assert set(losses) == {"rpn_cls", "rpn_box", "roi_cls", "roi_box", "distill_bce", "distill_dice",
                           "edge_local", "edge_global"}
    assert all(torch.isfinite(v) for v in losses.values())
    model.weighted_total(losses).backward()
    assert model.decoder.prompt_token.weight.grad is not None
    assert model.decoder.prompt_token.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.sam.parameters())


def test_a_detector_with_an_encoder_of_its_own_trains_it_and_leaves_sam_frozen():
    """`model.detector_encoder: own`: the detector reads the image through a trainable copy of SAM's
    encoder, which starts as SAM's (so the detector first reads what it would read from SAM) and learns
    from the detector's losses alone; SAM, the teacher, stays as it is."""
    model = _model(detector_encoder="own").train()
    embedding, rgb, normalised, boxes, sizes = _batch(model)
    own = model.detector_encoder
    assert own is not model.sam.image_encoder
    assert torch.equal(model.detector_input(embedding, normalised), embedding)  # the copy starts as SAM's encoder
    assert all(p.requires_grad for p in own.parameters())
    assert {k for k in model.trainable_state_dict() if k.startswith("detector_encoder.")} == \
        {f"detector_encoder.{k}" for k in own.state_dict()}
    sam_before = {k: v.clone() for k, v in model.sam.state_dict().items()}
    optimiser = torch.optim.SGD(model.trainable_parameters(), lr=0.1)
    losses = model(embedding, rgb, normalised, boxes, sizes)
    model.weighted_total(losses).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in own.parameters())
    assert all(p.grad is None for p in model.sam.parameters())
    optimiser.step()
    assert all(torch.equal(v, sam_before[k]) for k, v in model.sam.state_dict().items())
    assert not torch.equal(model.detector_input(embedding, normalised), embedding)  # it has learned
    assert _model().detector_encoder is None  # the authors' way: the detector reads SAM's embedding


def test_edge_loss_switch_turns_it_off():
    model = _model()
    model.config = model.config.replace({"loss.edge_aware": False})
    losses = model.train()(*_batch(model))
    assert losses["edge_local"].item() == 0 and losses["edge_global"].item() == 0


def test_edge_aware_losses_shapes():
    logits = torch.randn(3, 1, 32, 32, requires_grad=True)
    boxes = torch.tensor([[10.0, 10, 40, 40], [50, 60, 90, 100], [0, 0, 127, 127]])
    rgb = torch.rand(2, 3, 128, 128) * 255
    valid = valid_region([(128, 128), (128, 100)], 128, bottom_rows=10)
    local, glob = edge_aware_losses(logits, boxes, boxes, torch.tensor([0, 1, 1]), rgb, valid)
    (local + glob).backward()
    assert torch.isfinite(local) and torch.isfinite(glob) and logits.grad.abs().sum() > 0


def test_octave_scales_add_anchor_sizes_per_level():
    config = tiny_config()
    config = config.replace({"model.anchor_octave_scales": (1.0, 1.5)})
    torch.manual_seed(0)
    model = DESSAM(build_sam("tiny", image_size=config.model.image_size), config)
    generator = model.detector.rpn.anchor_generator
    ratios = len(config.model.detector.anchor_ratios)
    assert generator.num_anchors_per_location() == [2 * ratios] * len(model.neck.strides)
    first, stride = generator.sizes[0], model.neck.strides[0]
    assert first == (config.model.detector.anchor_scale * stride, config.model.detector.anchor_scale * stride * 1.5)
    embedding, rgb, normalised, boxes, sizes = _batch(model)
    losses = model(embedding, rgb, normalised, boxes, sizes)
    assert all(torch.isfinite(v) for v in losses.values())


def test_the_prompt_token_starts_as_sams_padding_token():
    model = _model()
    token = model.decoder.prompt_token.weight
    assert torch.equal(token.detach(), model.sam.prompt_encoder.not_a_point_embed.weight.detach())
    assert token.requires_grad and not model.sam.prompt_encoder.not_a_point_embed.weight.requires_grad
    assert token.data_ptr() != model.sam.prompt_encoder.not_a_point_embed.weight.data_ptr()  # a copy


def test_distillation_sums_over_prompts_and_averages_over_images():
    from dessam.models.losses import distillation_losses

    torch.manual_seed(0)
    student, teacher = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8)
    bce, dice = distillation_losses(student, teacher)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(student, (teacher > 0).float())
    assert torch.allclose(bce, expected)
    # twice the prompts in one image: twice the loss (the official sum over prompts)
    bce2, dice2 = distillation_losses(student.repeat(2, 1, 1, 1), teacher.repeat(2, 1, 1, 1))
    assert torch.allclose(bce2, 2 * bce) and torch.allclose(dice2, 2 * dice)
    # the same two prompts in two images: the per-image sum, averaged over images
    bce3, dice3 = distillation_losses(student.repeat(2, 1, 1, 1), teacher.repeat(2, 1, 1, 1), images=2)
    assert torch.allclose(bce3, bce) and torch.allclose(dice3, dice)
    # a perfect student has (nearly) no loss
    perfect = (teacher > 0).float() * 40 - 20
    assert distillation_losses(perfect, teacher)[0] < 1e-6


def test_the_prompt_token_learns_to_follow_the_teacher():
    """Only the token trains, on the shipped default teacher and a synthetic cytology field: prompted
    with shifted boxes, the student moves towards the teacher's masks of the annotated boxes."""
    from dessam.data.synth import make_scene
    from dessam.models.losses import distillation_losses
    from dessam.models.default_teacher import load_default_teacher

    config = tiny_config()
    sam = load_default_teacher()
    config = config.replace({"model.image_size": sam.image_encoder.img_size})
    model = DESSAM(sam, config)
    image, labels = make_scene(np.random.default_rng(3), "patch")
    inputs = prepare_image(image, model.image_size)
    embedding = model.encode(torch.from_numpy(inputs.normalised[None]))
    boxes = torch.from_numpy(instance_boxes(labels)[1])
    shifted = boxes + torch.tensor([3.0, 3.0, 3.0, 3.0])
    # as in training: each pair on one window of the frame (the shipped teacher decodes on per-box views)
    pairs = torch.cat([torch.minimum(boxes[:, :2], shifted[:, :2]), torch.maximum(boxes[:, 2:], shifted[:, 2:])], 1)
    origins, size = model.decoder.windows(pairs, 4)
    images = torch.from_numpy(inputs.normalised[None])
    with torch.no_grad():
        teacher = model.decoder(embedding, boxes, use_token=False, origins=origins, size=size, images=images).logits

    def loss():
        student = model.decoder(embedding, shifted, use_token=True, origins=origins, size=size, images=images).logits
        bce, dice = distillation_losses(student, teacher)
        return 0.5 * bce + 0.01 * dice

    optimizer = torch.optim.Adam([model.decoder.prompt_token.weight], lr=0.02)
    before = loss().item()
    for _ in range(100):  # the views move with the shifted box: the token has more to undo
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    after = loss().item()
    print(f"distillation loss: {before:.4f} before, {after:.4f} after 100 token-only steps")
    assert after < 0.8 * before, (before, after)


def test_local_decoding_in_training_gives_losses_close_to_full_decoding():
    """Teacher and student of a pair share one window; with a generous margin the losses match the
    whole-embedding ones, and the window logits land where the full frame has them."""
    full = _model()
    local = _model()
    local.config = local.config.replace({"model.local_decoding": True})
    local.config = local.config.replace({"model.local_margin": 1000})  # the windows cover the grid: exactly full decoding
    batch = _batch(full)
    torch.manual_seed(0)
    full_losses = full.train()(*batch)
    torch.manual_seed(0)
    local_losses = local.train()(*batch)
    for name in ("distill_bce", "distill_dice", "edge_local", "edge_global"):
        assert local_losses[name].item() == pytest.approx(full_losses[name].item(), rel=1e-5), name
    local.config = local.config.replace({"model.local_margin": 2})
    torch.manual_seed(0)
    windowed = local.train()(*batch)
    assert all(torch.isfinite(v) for v in windowed.values())
    embedding, _, _, boxes, _ = batch
    origins, size = local.decoder.windows(boxes[0], 2)
    decoded = local.decoder(embedding, boxes[0], use_token=False, origins=origins, size=size)
    assert decoded.logits.shape[-1] == 4 * size < 4 * local.decoder.grid
    framed = decoded.to_frame()
    k = decoded.logits.shape[-1]
    for i, (row, col) in enumerate(decoded.origins.tolist()):
        assert torch.equal(framed[i, 0, row:row + k, col:col + k], decoded.logits[i, 0])
        assert (framed[i, 0] > 0).sum() == (decoded.logits[i, 0] > 0).sum()
