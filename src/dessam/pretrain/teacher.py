"""Pre-train the default teacher on a corpus: boxes in, the nucleus inside each box out.

The teacher learns what SAM learns from SA-1B, for nuclei: given an image and a box around a
nucleus, draw that nucleus's mask. Every step draws `batch_size` crops from the corpus's datasets
(each in proportion to its weight; `dessam.data.corpus`), each rescaled 0.5-2 x, turned and
recoloured (`dessam.data.augment`), and prompts the model with up to `max_prompts` nuclei per
crop. Prompts are the ground-truth boxes jittered the way a detector's boxes err (`jitter_boxes`).
Each box is decoded on a window of the embedding around it, as prediction decodes it, with a
margin drawn per crop so that the model also sees the larger windows that prompts sharing a
decoder call get. Losses, on the logits of each window (one per input pixel): binary cross-entropy
near the box and away from it (weighing the same, so that small nuclei are not drowned by the
background) plus Dice, and the mean squared error of SAM's IoU head against the IoU it achieved.

A run writes into its folder: `recipe.yaml` (its composed recipe: `--config` reads it back), `teacher.pt`
(a default-teacher file, loadable with `--sam default --sam-checkpoint`), `teacher.md` (its model card), `log.csv` (loss and IoU per step,
the validation IoU of every dataset at each evaluation), and `checkpoints/last.pt` to resume. The
crops of step k depend only on (seed, k), so a resumed run is the run that was not interrupted.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import yaml
from segment_anything.modeling import Sam
from tqdm.auto import tqdm

from ..atomic import atomic_path, remove_stale_temporaries, write_text_atomic
from ..data.corpus import Corpus, load_dataset, read_manifest
from ..errors import DessamError
from ..models.checkpoints import safe_torch_load, save_torch_atomic
from ..models.default_teacher import build_default_architecture, full_arch, teacher_file
from ..models.prompted_decoder import PromptedMaskDecoder
from .crops import crop_losses, draw_crops, nucleus_boxes, view_losses
from .recipe import ARCH_SIZES, Recipe


def views_base(recipe: Recipe) -> tuple:
    """(arch, state dict) of the teacher that a view teacher is trained on top of: its whole-image
    encoder stays (frozen; the detector reads its embedding), its decoder and encoder start the views."""
    from ..models.default_teacher import teacher_architecture

    path = views_base_path(recipe)
    if not path.is_file():
        raise DessamError(f"--views-from {path}: no such teacher file; give a bundled name or a teacher.pt")
    arch = teacher_architecture(path)
    if arch["encoder"] != "unet":
        raise DessamError(f"--views-from {path}: views go on top of a U-Net teacher (stride 4), not '{arch['encoder']}'")
    arch.pop("stride")
    size = ARCH_SIZES[recipe.arch]
    arch["views"] = {"size": recipe.view_size, "context": recipe.view_context, "widths": size["widths"],
                     "depths": size["depths"]}
    return arch, safe_torch_load(path)["state_dict"]


def views_base_path(recipe: Recipe) -> Path:
    """The teacher file `--views-from` names."""
    from ..models.default_teacher import is_default_teacher, teacher_path

    return teacher_path(recipe.views_from) if is_default_teacher(recipe.views_from) else Path(recipe.views_from)


def views_base_sha256(recipe: Recipe) -> str:
    from ..models.checkpoints import file_sha256

    return file_sha256(views_base_path(recipe))


def start_views(sam: Sam, base_state: dict) -> None:
    """Load the base teacher into a view teacher: every module as it was, and the view encoder from the
    whole-image encoder where their shapes agree; freeze the whole-image encoder."""
    state = dict(base_state)
    own = sam.state_dict()
    for key, value in base_state.items():
        if key.startswith("image_encoder."):
            twin = "view_encoder." + key[len("image_encoder."):]
            if twin in own and own[twin].shape == value.shape:
                state[twin] = value
    sam.load_state_dict(state, strict=False)
    for parameter in sam.image_encoder.parameters():
        parameter.requires_grad_(False)


def normalise(sam: Sam, images: torch.Tensor) -> torch.Tensor:
    """SAM's pixel normalisation without its padding to the input size (`Sam.preprocess` pads)."""
    return (images - sam.pixel_mean) / sam.pixel_std


def learning_rate(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then a cosine decay to zero at the last step."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(recipe.steps - recipe.warmup, 1)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


# ----- validation ----------------------------------------------------------------------------
def instance_iou(crop: np.ndarray, origin: tuple, labels: np.ndarray, identity: int, area: int) -> float:
    """IoU of a mask (a boolean crop at `origin` of the image) with nucleus `identity` of `labels`."""
    rows = slice(origin[0], origin[0] + crop.shape[0])
    cols = slice(origin[1], origin[1] + crop.shape[1])
    inter = int((crop & (labels[rows, cols] == identity)).sum()) if crop.size else 0
    return inter / max(int(crop.sum()) + area - inter, 1)


def box_prompt_iou(predictor, samples: list) -> float:
    """Mean mask IoU over every nucleus of `samples`, each prompted with its exact box through the
    prediction pipeline (`dessam label`'s engine: the image at its own scale, in windows of the
    model's input size when larger, each box decoded as prediction decodes it)."""
    from ..inference.box_masks import box_masks

    ious = []
    for sample in samples:
        ids, boxes = nucleus_boxes(sample.labels, min_area=1)
        if not len(ids):
            continue
        areas = np.bincount(sample.labels.ravel())
        found = box_masks(predictor, sample.image, boxes, use_token=False).instances
        ious += [instance_iou(found.crops[k], tuple(found.origins[k]), sample.labels, int(i), int(areas[i]))
                 for k, i in enumerate(ids)]
    return float(np.mean(ious)) if ious else float("nan")


def validate(sam: Sam, datasets: list, recipe: Recipe) -> dict:
    """{dataset name: box-prompt IoU on its held-out images} (the model is left in eval mode)."""
    from ..inference.loading import teacher_predictor

    sam.eval()
    trainable = [p for p in sam.parameters() if p.requires_grad]
    try:
        with torch.no_grad():
            predictor = teacher_predictor(sam, {"name": "default", "checkpoint": None, "sha256": ""},
                                          full_arch(ARCH_SIZES[recipe.arch])["local_margin"])
            return {d.spec.name: box_prompt_iou(predictor, d.val[:recipe.val_limit]) for d in datasets if d.val}
    finally:  # the predictor freezes the model it wraps
        for parameter in trainable:
            parameter.requires_grad_(True)


# ----- the run -------------------------------------------------------------------------------
@dataclass
class PretrainResult:
    teacher_path: Path
    card_path: Path
    steps_done: int
    validation: dict = field(default_factory=dict)


def _resume_state(out_dir: Path) -> dict:
    """The checkpoint a resumed run continues (its stale temporary files removed first)."""
    last = out_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        raise DessamError(f"{last}: nothing to resume from; run without --resume")
    remove_stale_temporaries(out_dir, last.parent)
    return safe_torch_load(last)


def _teacher_network(recipe: Recipe, device) -> tuple:
    """The network to train and its architecture: new, or per-box views on a trained teacher."""
    if recipe.views_from is not None:
        base_arch, base_state = views_base(recipe)
        arch = full_arch(base_arch)
        sam = build_default_architecture(arch["image_size"], arch)
        start_views(sam, base_state)
        return sam.to(device), arch
    arch = full_arch(ARCH_SIZES[recipe.arch])
    return build_default_architecture(arch["image_size"], arch).to(device), arch


def _step_loss(decoder: PromptedMaskDecoder, images: torch.Tensor, labels, prompts, rng, margin: int) -> tuple:
    """One step's loss, averaged over its prompts, and the IoU of each prompted mask."""
    if decoder.views is not None:
        total, iou = view_losses(decoder, images, labels, prompts)
        return total / max(len(iou), 1), [iou]
    embeddings = decoder.sam.image_encoder(images)  # the crops alone, unpadded
    total, count, ious = 0.0, 0, []
    free = decoder.grid - embeddings.shape[-1]  # where a crop may sit in the input frame
    for index, (crop_labels, prompted) in enumerate(zip(labels, prompts)):
        offset = (int(rng.integers(free + 1)), int(rng.integers(free + 1)))
        loss, iou = crop_losses(decoder, embeddings[index:index + 1], crop_labels, prompted, margin, offset)
        total, count = total + loss, count + len(prompted.ids)
        ious.append(iou)
    return total / max(count, 1), ious


def _teacher_datasets(corpus, progress: bool) -> tuple:
    """The corpus's datasets for the teacher and the share of crops each is drawn for."""
    datasets = [load_dataset(spec, progress) for spec in corpus.datasets if "teacher" in spec.use]
    if not datasets:
        raise DessamError(f"{corpus.path}: no dataset is for the teacher; give one with use: [teacher]")
    weights = np.array([d.spec.weight for d in datasets], np.float64)
    return datasets, weights / weights.sum()


def pretrain_teacher(corpus_path, out_dir, recipe: Optional[Recipe] = None, resume: bool = False, device: str = "cpu",
                     threads: Optional[int] = None, command: str = "", progress: bool = True) -> PretrainResult:
    """Pre-train the default teacher on the corpus at `corpus_path` into `out_dir` (see the module
    docstring); `resume` continues from `out_dir/checkpoints/last.pt` with its recipe."""
    out_dir = Path(out_dir)
    state = _resume_state(out_dir) if resume else None
    if state is not None:
        recipe = Recipe(**{**state["recipe"], "margins": tuple(state["recipe"]["margins"])})
    recipe = recipe or Recipe()
    corpus = read_manifest(corpus_path)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DessamError(f"{out_dir}: cannot create the run folder ({exc.strerror}); choose another --out") from None
    if threads:
        torch.set_num_threads(int(threads))
    datasets, weights = _teacher_datasets(corpus, progress)

    torch.manual_seed(recipe.seed)
    sam, arch = _teacher_network(recipe, device)
    if recipe.crop > arch["image_size"]:
        raise DessamError(f"--crop {recipe.crop}: at most the model's input size, {arch['image_size']}")
    write_text_atomic(out_dir / "recipe.yaml", yaml.safe_dump({**asdict(recipe), "margins": list(recipe.margins)},
                                                              sort_keys=False))
    params = [p for p in sam.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    run = _TeacherRun(out_dir, recipe, corpus, datasets, weights, sam, arch, optimizer, device, command)
    if state is not None:
        sam.load_state_dict(state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        run.step, run.history = int(state["step"]), list(state["history"])
    log = _open_log(out_dir / "log.csv", [d.spec.name for d in datasets if d.val],
                    keep_until=run.step if state else None)
    bar = tqdm(total=recipe.steps, initial=run.step, desc="pretrain teacher", unit="step", disable=not progress)
    try:
        sam.train()
        while run.step < recipe.steps:
            row = run.train_step()
            if run.step % recipe.eval_every == 0 or run.step == recipe.steps:
                scores = run.checkpoint()
                sam.train()
                row.update({f"val_{k}": f"{v:.4f}" for k, v in scores.items()})
            log.write(row)
            bar.update(1)
            bar.set_postfix(loss=f"{run.running[0]:.3f}", iou=f"{run.running[1]:.3f}")
    finally:
        bar.close()
        log.close()
    if not run.history or run.history[-1]["step"] != run.step:  # 0 steps, or a finished run resumed
        run.checkpoint()
    return PretrainResult(out_dir / "teacher.pt", out_dir / "teacher.md", run.step,
                          {k: v for k, v in run.history[-1].items() if k != "step"})


class _TeacherRun:
    """A teacher's training under way: its network, optimizer, step and held-out history."""

    def __init__(self, out_dir: Path, recipe: Recipe, corpus, datasets: list, weights: np.ndarray, sam: Sam,
                 arch: dict, optimizer, device, command: str):
        self.out_dir, self.recipe, self.corpus, self.datasets, self.weights = out_dir, recipe, corpus, datasets, weights
        self.sam, self.arch, self.optimizer, self.device, self.command = sam, arch, optimizer, device, command
        self.decoder = PromptedMaskDecoder(sam, prompt_token=False)
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.step, self.history, self.running = 0, [], None
        self.started = time.monotonic()

    def train_step(self) -> dict:
        """One step on crops drawn for it (the same crops for the same seed and step); its log row."""
        recipe, step = self.recipe, self.step
        rng = np.random.default_rng([recipe.seed, step])
        images, labels, prompts, _ = draw_crops(rng, self.datasets, self.weights, recipe)
        margin = int(rng.integers(recipe.margins[0], recipe.margins[1] + 1))
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(step, recipe)
        loss, ious = _step_loss(self.decoder, normalise(self.sam, images.to(self.device)), labels, prompts, rng, margin)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.step = step = step + 1
        value, iou = float(loss.detach()), float(torch.cat(ious).mean())
        running = self.running
        self.running = (value, iou) if running is None else (0.98 * running[0] + 0.02 * value,
                                                             0.98 * running[1] + 0.02 * iou)
        return {"step": step, "lr": f"{learning_rate(step - 1, recipe):.6g}", "loss": f"{value:.5f}",
                "train_iou": f"{iou:.4f}"}

    def checkpoint(self) -> dict:
        """Score the held-out sets, record them and save the run (teacher.pt, its card, last.pt)."""
        scores = validate(self.sam, self.datasets, self.recipe)
        self.history.append({"step": self.step, **{k: round(v, 4) for k, v in scores.items()}})
        _save(self.out_dir, self.sam, self.arch, self.recipe, self.corpus, self.datasets, self.history, self.step,
              self.optimizer, self.command, self.started)
        return scores


def _open_log(path: Path, val_names: list, keep_until: Optional[int]):
    from ..training.csv_log import CsvLog

    columns = ["step", "lr", "loss", "train_iou"] + [f"val_{name}" for name in val_names]
    return CsvLog(path, columns, key="step", keep_until=keep_until)


def _save(out_dir: Path, sam: Sam, arch: dict, recipe: Recipe, corpus: Corpus, datasets: list, history: list,
          step: int, optimizer, command: str, started: float) -> None:
    """Write teacher.pt, its model card and the resumable checkpoint, each atomically."""
    from ..licences import from_data, inherited
    from ..models.weights_terms import teacher_terms
    from ..training.model_card import teacher_card

    info = {"recipe": asdict(recipe), "steps_done": step, "validation": history[-1],
            "datasets": [{"name": d.spec.name, "licence": d.spec.licence, **d.counts()} for d in datasets]}
    terms = from_data({d.spec.name: d.spec.licence for d in datasets}, "the teacher")
    if recipe.views_from is not None:  # models trained on that teacher keep their detector on this one
        info["views_from"] = {"name": Path(recipe.views_from).name, "sha256": views_base_sha256(recipe)}
        terms = inherited(terms, teacher_terms(views_base_path(recipe)))  # its whole-image encoder is that teacher's
    save_torch_atomic(teacher_file(sam, arch, train=json.loads(json.dumps(info)), licence=terms.to_dict()),
                      out_dir / "teacher.pt")
    seconds = time.monotonic() - started
    card = teacher_card(corpus, datasets, recipe, history, step, arch, sam, command, seconds, terms,
                        info.get("views_from", {}).get("sha256", ""))
    with atomic_path(out_dir / "teacher.md") as tmp:
        tmp.write_text(card, encoding="utf-8")
    state = {"recipe": {**asdict(recipe), "margins": list(recipe.margins)}, "step": step, "history": history,
             "state_dict": {k: v.detach().cpu().clone() for k, v in sam.state_dict().items()},
             "optimizer": optimizer.state_dict()}
    save_torch_atomic(state, out_dir / "checkpoints" / "last.pt")


def read_history(log_csv: Path) -> list:
    """The rows of a pre-training log (for plots and reports)."""
    with open(log_csv, newline="") as handle:
        return list(csv.DictReader(handle))
