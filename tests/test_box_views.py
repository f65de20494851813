"""A teacher that segments each box on a view of its own: geometry, decoding, training, prediction."""

import numpy as np
import pytest
import torch

from dessam.config import Config
from dessam.models.box_views import OUTSIDE, boxes_in_views, cut_views, view_squares, views_to_windows
from dessam.models.default_teacher import build_default_architecture, full_arch, load_default_teacher, teacher_file
from dessam.models.dessam import DESSAM
from dessam.models.prompted_decoder import PromptedMaskDecoder
from dessam.pretrain import crops
from dessam.pretrain import teacher as pt
from test_pretrain_teacher import TINY

TINY_VIEWS = {**TINY, "views": {"size": 32, "widths": [4, 8, 8, 8], "depths": [1, 1, 1, 1]}}


def _view_teacher(seed: int = 0):
    torch.manual_seed(seed)
    return build_default_architecture(128, TINY_VIEWS).eval()


def test_views_are_squares_around_each_box_and_map_back_exactly():
    mask = torch.zeros(1, 1, 100, 100)
    mask[0, 0, 30:50, 40:70] = 1
    boxes = torch.tensor([[40.0, 30, 70, 50], [5.0, 5, 7, 6]])
    squares = view_squares(boxes, 2.0, 12.0)
    assert squares[0].tolist() == [25, 10, 85, 70]           # 2 x the longer side, same centre
    assert squares[1].tolist() == [0, -0.5, 12, 11.5]        # at least 12 px
    assert boxes_in_views(boxes[:1], squares[:1], 64)[0].tolist() == pytest.approx([16, 64 / 3, 48, 128 / 3])
    views = cut_views(mask, torch.zeros(1, dtype=torch.long), squares[:1], 64)
    assert abs(float((views > 0.5).sum()) - 20 * 30 * (64 / 60) ** 2) < 40
    back = views_to_windows((views - 0.5) * 10, squares[:1], torch.tensor([[0, 0]]), 100, 1.0)[0, 0]
    truth = mask[0, 0] > 0
    assert torch.equal(back > 0, truth)
    assert (back[:, :20] == OUTSIDE).all() and (back[:, 90:] == OUTSIDE).all()  # beyond the view


def test_a_view_teacher_decodes_each_box_on_its_view_into_the_frame():
    sam = _view_teacher()
    decoder = PromptedMaskDecoder(sam, prompt_token=True)
    assert decoder.views == {"size": 32, "context": 2.0, "min_side": 12.0}
    images = torch.randn(2, 3, 128, 128)
    embeddings = sam.image_encoder(images)
    boxes = torch.tensor([[10.0, 12, 30, 28], [60.0, 70, 84, 90], [100.0, 100, 110, 112]])
    index = torch.tensor([0, 1, 1])
    origins, size = decoder.windows(boxes, margin=None)  # a view teacher always decodes on windows
    held = decoder.window_boxes(boxes)
    assert (origins[:, 1] * 4 <= held[:, 0].floor()).all() and ((origins[:, 1] + size) * 4 >= held[:, 2].ceil()).all()
    with torch.no_grad():
        out = decoder(embeddings, boxes, index, use_token=False, origins=origins, size=size, images=images)
        logits, iou, squares = decoder.decode_views(images, boxes, index, use_token=False)
    assert out.logits.shape == (3, 1, 4 * size, 4 * size) and out.frame == (128, 128)
    assert logits.shape == (3, 1, 32, 32) and iou.shape == (3, 1)
    # the window holds the view's own logits where the view is, and nothing beyond it
    frame = out.to_frame()[0, 0]
    x1, y1, x2, y2 = squares[0].tolist()
    assert (frame[:, int(np.ceil(x2)) + 1:] == OUTSIDE).all()
    centre = frame[int((y1 + y2) / 2), int((x1 + x2) / 2)]
    assert torch.isclose(centre, logits[0, 0, 15:17, 15:17].mean(), atol=float(logits[0].std()))
    with torch.no_grad():  # the learned token changes what is drawn
        tokened = decoder(embeddings, boxes, index, use_token=True, origins=origins, size=size, images=images)
    assert not torch.equal(tokened.logits, out.logits)
    with pytest.raises(ValueError, match="normalised images"):
        decoder(embeddings, boxes, index, origins=origins, size=size)


def test_view_teacher_files_round_trip(tmp_path):
    sam = _view_teacher()
    path = tmp_path / "teacher.pt"
    torch.save(teacher_file(sam, TINY_VIEWS), path)
    loaded = load_default_teacher(None, path)
    assert loaded.view_spec["size"] == 32 and loaded.decodes_locally
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sam.state_dict().items())
    assert full_arch({"views": {"size": 48}})["views"]["context"] == 2.0


def test_view_training_starts_from_a_teacher_keeps_its_image_encoder_and_learns(tmp_path, monkeypatch):
    monkeypatch.setitem(pt.ARCH_SIZES, "tiny", TINY)
    base = build_default_architecture(128, TINY)
    base_path = tmp_path / "base.pt"
    torch.save(teacher_file(base, TINY), base_path)
    arch, state = pt.views_base(pt.Recipe(arch="tiny", views_from=str(base_path), view_size=32))
    sam = build_default_architecture(128, full_arch(arch))
    pt.start_views(sam, state)
    assert all(torch.equal(sam.state_dict()["view_encoder." + k[len("image_encoder."):]], v)
               for k, v in state.items() if k.startswith("image_encoder."))
    assert not any(p.requires_grad for p in sam.image_encoder.parameters())
    decoder = PromptedMaskDecoder(sam, prompt_token=False)
    labels = np.zeros((32, 32), np.uint32)
    labels[4:14, 6:18] = 1
    labels[20:28, 20:30] = 2
    prompts = [crops.Prompted(np.array([[5, 3, 19, 15], [19, 21, 31, 27]], np.float32),
                           np.array([[6, 4, 18, 14], [20, 20, 30, 28]], np.float32), np.array([1, 2]))]
    images = pt.normalise(sam, torch.rand(1, 3, 32, 32) * 255)
    loss, iou = crops.view_losses(decoder, images, [labels], prompts)
    loss.backward()
    assert torch.isfinite(loss) and iou.shape == (2,)
    assert sam.view_encoder.stages[0][0][0].weight.grad.abs().sum() > 0
    assert sam.image_encoder.stages[0][0][0].weight.grad is None


def test_a_view_run_writes_a_teacher_that_predicts(tmp_path, corpus, monkeypatch):
    monkeypatch.setitem(pt.ARCH_SIZES, "tiny", TINY)
    base = pt.pretrain_teacher(corpus, tmp_path / "base", _recipe(steps=1), progress=False).teacher_path
    result = pt.pretrain_teacher(corpus, tmp_path / "views", _recipe(views_from=str(base), view_size=32),
                                 progress=False)
    assert set(result.validation) == {"dsb", "pap"} and all(0 <= v <= 1 for v in result.validation.values())
    before, after = torch.load(base, weights_only=True)["state_dict"], torch.load(result.teacher_path, weights_only=True)
    assert after["arch"]["views"]["size"] == 32
    assert all(torch.equal(after["state_dict"][k], v) for k, v in before.items() if k.startswith("image_encoder."))
    assert not all(torch.equal(after["state_dict"][k], v) for k, v in before.items() if k.startswith("mask_decoder."))


def test_des_sam_distils_through_views_and_trains_only_its_token(monkeypatch):
    sam = _view_teacher()
    config = Config.compose("cpu")
    model = DESSAM(sam, config)
    images = torch.randn(1, 3, 128, 128)
    embeddings = model.encode(images)
    boxes = [torch.tensor([[10.0, 12, 30, 28], [60.0, 70, 84, 90], [40.0, 40, 56, 60]])]
    losses = model(embeddings, torch.rand(1, 3, 128, 128) * 255, images, boxes, [(128, 128)])
    total = model.weighted_total(losses)
    total.backward()
    assert torch.isfinite(total) and float(losses["distill_bce"].detach()) > 0
    assert model.decoder.prompt_token.weight.grad is not None
    assert all(p.grad is None for p in sam.parameters())


def test_a_model_that_reads_no_sam_embedding_trains_on_zeros_of_its_shape_with_the_same_losses(tmp_path):
    """A detector with an encoder of its own on a teacher of per-box views reads nothing of SAM's
    embedding: training gives it zeros of the embedding's shape (`view_embedding`), runs no SAM encoder,
    caches nothing, and its losses are those it gets on the real embedding."""
    from dessam.geometry.inputs import prepare_image
    from dessam.training.batches import embedding_shape, view_embedding
    from dessam.training.cache import EmbeddingCache

    model = DESSAM(_view_teacher(), Config.compose("cpu").replace({"model.image_size": 128}))
    assert model.detector_encoder is not None and not model.reads_embeddings
    inputs = prepare_image(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8), 128)
    cache = EmbeddingCache(tmp_path / "cache", encoder_key="test")
    encoded = []
    hook = model.sam.image_encoder.register_forward_hook(lambda module, args, out: encoded.append(1))
    zeros = view_embedding(model, cache, cache.key(inputs.resized), inputs, "cpu", embedding_shape(model))
    hook.remove()
    assert not encoded and cache.misses == 0 and not any((tmp_path / "cache").rglob("*.npy"))
    assert zeros.shape == embedding_shape(model) and not zeros.any()
    normalised = torch.from_numpy(inputs.normalised[None])
    boxes = [torch.tensor([[10.0, 12, 30, 28], [60.0, 70, 84, 90], [40.0, 40, 56, 60]])]
    rgb = torch.from_numpy(inputs.rgb[None])
    losses = []
    for embeddings in (zeros[None].float(), model.encode(normalised)):
        torch.manual_seed(0)  # the detector's samplers draw at random
        losses.append(model(embeddings, rgb, normalised, boxes, [(128, 128)]))
    assert {k: float(v.detach()) for k, v in losses[0].items()} == {k: float(v.detach()) for k, v in losses[1].items()}


def _recipe(**changes):
    return pt.Recipe(**{"steps": 3, "batch_size": 2, "crop": 32, "max_prompts": 3, "warmup": 2, "arch": "tiny",
                        "eval_every": 3, "val_limit": 2, **changes})


def test_a_model_on_the_base_teacher_lends_its_detector_to_the_view_teacher(tmp_path, corpus, monkeypatch):
    from dessam.errors import DessamError
    from dessam.models.model_file import read_model_file
    from dessam.pretrain.model import pretrain_model

    monkeypatch.setitem(pt.ARCH_SIZES, "tiny", TINY)
    base = pt.pretrain_teacher(corpus, tmp_path / "base", _recipe(steps=1), progress=False).teacher_path
    views = pt.pretrain_teacher(corpus, tmp_path / "views", _recipe(steps=1, views_from=str(base), view_size=32),
                                progress=False).teacher_path
    other = pt.pretrain_teacher(corpus, tmp_path / "other", _recipe(steps=1, seed=1), progress=False).teacher_path
    first = pretrain_model(corpus, base, tmp_path / "first", max_iters=1, synthetic_images=1, progress=False, size_steps=2)
    second = pretrain_model(corpus, views, tmp_path / "second", max_iters=1, synthetic_images=1, progress=False, size_steps=2,
                            init=str(first.model_path))
    assert "started the detector from" in second.card_path.read_text()
    assert read_model_file(second.model_path).identity["sha256"] != read_model_file(first.model_path).identity["sha256"]
    # a detector that read the base teacher's embedding lends itself to one with an encoder of its own
    on_embedding = pretrain_model(corpus, base, tmp_path / "on-embedding", max_iters=1, synthetic_images=1,
                                  progress=False, size_steps=0, overrides={"model.detector_encoder": "teacher"})
    own = pretrain_model(corpus, views, tmp_path / "own", max_iters=0, synthetic_images=1, progress=False, size_steps=0,
                         init=str(on_embedding.model_path))
    lent, started = read_model_file(on_embedding.model_path).state_dict, read_model_file(own.model_path).state_dict
    assert any(key.startswith("detector_encoder.") for key in started)
    assert all(torch.equal(started[key], value) for key, value in lent.items() if key.startswith(("neck.", "detector.")))
    with pytest.raises(DessamError, match="trained on other SAM weights"):
        pretrain_model(corpus, other, tmp_path / "third", max_iters=1, synthetic_images=1, progress=False, size_steps=2,
                       init=str(first.model_path))
