"""Model cards: what a weight file was trained on, under which licence it is, what it stores, and
how well it did on held-out data, written as Markdown beside the weights.

Every DES-SAM model card states the post-processing stored in its model file as a table of
`STATED_SETTINGS` (`settings_section`), which `stated_settings` reads back: a test holds each
bundled model's file to what its card states.
"""

from __future__ import annotations

import datetime
import platform
import re
from dataclasses import asdict
from pathlib import Path

from typing import TYPE_CHECKING

from ..config import Config, settings_by_key
from ..licences import Terms

if TYPE_CHECKING:   # the card's statement is read by `--help`, which should not load the data package
    from ..data.corpus import Corpus

# What `dessam predict`, `eval` and `label` read from a model file unless told otherwise.
STATED_SETTINGS = ("model.postprocess.score_threshold", "model.postprocess.max_detections",
                   "model.postprocess.min_size", "model.postprocess.mask_threshold",
                   "model.postprocess.nucleus_score_threshold")
_STATED_ROW = re.compile(r"^\| `(model\.[a-z_.]+)` \| ([^|]+?) \|", re.MULTILINE)


def licence_text(terms: Terms) -> str:
    """One paragraph: the terms, what they come from, and what models made from these weights inherit."""
    sources = "; ".join(terms.sources)
    if terms.non_commercial:
        return (f"{terms.licence}, {terms.words}: research use, no commercial use ({sources}). A model "
                "fine-tuned from these weights, or trained on a teacher under these terms (which it needs again "
                "to run), inherits them, ShareAlike included where the licence has SA")
    return f"{terms.licence}, like dessam ({sources})"


def stored_settings(config: Config) -> dict:
    """The `STATED_SETTINGS` of a model's configuration, {"section.key": value}."""
    settings = settings_by_key(config.to_dict())
    return {key: settings[key] for key in STATED_SETTINGS}


def settings_section(config: Config) -> str:
    """The card's statement of the post-processing stored in the model file (`stated_settings` reads it)."""
    rows = "\n".join(f"| `{key}` | {'none' if value is None else format(value, 'g')} |"
                     for key, value in stored_settings(config).items())
    return f"""## Stored post-processing

What `dessam predict`, `eval` and `label` apply unless told otherwise, as stored in the model file:

| setting | value |
|---|---|
{rows}
"""


def stated_settings(card: str) -> dict:
    """The settings a model card states in its "Stored post-processing" table, {"section.key": float}."""
    return {key: None if value == "none" else float(value) for key, value in _STATED_ROW.findall(card)}


def detector_sentence(config: Config) -> str:
    """What the card says the detector reads (`model.detector_encoder`)."""
    if config.model.detector_encoder == "own":
        return ("The detector reads each image through an image encoder of its own (`model.detector_encoder: own`), "
                "started as a copy of SAM's and trained with the detector; SAM itself stays frozen.")
    return "The detector reads the frozen SAM's image embedding (`model.detector_encoder: teacher`)."


def trained_model_card(model_file, result, train_json, command: str = "") -> str:
    """The model card `dessam train` writes beside RUN/model.pt (`model_file`: the read model file)."""
    terms = Terms.from_dict(model_file.licence) if model_file.licence else None
    identity = model_file.identity
    teacher = f", file `{identity['checkpoint']}`" if identity.get("checkpoint") else ""
    licence = (licence_text(terms) + ". It also carries whatever terms its training data carries, which dessam "
               "does not know" if terms is not None else "not recorded")
    return f"""# dessam model

DES-SAM (a Faster R-CNN detector and one learned prompt token on the frozen SAM `{identity['name']}`{teacher},
sha256 {identity['sha256'][:12]}) trained by `dessam train` on the boxes of `{Path(train_json).name}`:
{result.box_annotations} annotations supervised by their boxes, {result.mask_annotations} by their masks.
{result.iterations} iterations ({result.epochs_done} epochs) of the `{model_file.config.preset or 'custom'}`
configuration; {result.start}. {detector_sentence(model_file.config)}

**Licence of these weights:** {licence}.

{settings_section(model_file.config)}
Command: `{command or '(from the Python API)'}`

Date: {datetime.date.today().isoformat()}
"""


def corpus_table(datasets: list) -> str:
    """One row per dataset: what it is, how much of it went where, and its licence."""
    lines = ["| dataset | format | stain | train images | train nuclei | held-out images | held-out nuclei | "
             "weight | pixel size (um) | trains | licence | where to get it |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for dataset in datasets:
        spec, counts = dataset.spec, dataset.counts()
        train = ("drawn anew each step", "") if dataset.synthetic else (counts["train_images"], counts["train_nuclei"])
        lines.append(f"| {spec.name} | {spec.format}{' (' + spec.generator + ')' if spec.generator else ''} | "
                     f"{spec.stain or '-'} | {train[0]} | {train[1] or '-'} | {counts['val_images']} | "
                     f"{counts['val_nuclei']} | {spec.weight:g} | {spec.pixel_size_um or '-'} | {', '.join(spec.use)} | "
                     f"{spec.licence} | "
                     f"{spec.source or '-'} |")
    return "\n".join(lines)


def validation_table(history: list, names: list) -> str:
    lines = ["| step | " + " | ".join(names) + " |", "|---:|" + "---:|" * len(names)]
    for row in history:
        lines.append(f"| {row['step']} | " + " | ".join(f"{row.get(n, float('nan')):.3f}" for n in names) + " |")
    return "\n".join(lines)


def views_paragraph(arch: dict, recipe, base_sha256: str = "") -> str:
    """What a teacher that decodes on per-box views does with each box (empty for other teachers);
    the teacher it was built on is named with its SHA-256, since a bundled name may later mean another file."""
    views = arch.get("views")
    if not views:
        return ""
    return f"""
Each box is segmented on a view of its own: a square {views['context']:g} x the box's longer side (at least
{views['min_side']:g} px) resampled to {views['size']} x {views['size']} px and encoded by a second U-Net (widths
{views['widths']}), so that every nucleus is drawn at the same resolution whatever its size. The whole-image
encoder, which the detector reads, is that of `{recipe.views_from}` (sha256 {base_sha256[:12] or 'not recorded'}), kept frozen; the view encoder and SAM's
prompt encoder and mask decoder started from it and were trained on the views.
"""


def teacher_card(corpus: Corpus, datasets: list, recipe, history: list, steps: int, arch: dict, sam, command: str,
                 seconds: float, terms: Terms, base_sha256: str = "") -> str:
    """The model card of a pre-trained default teacher."""
    params = sum(p.numel() for p in sam.parameters())
    names = [d.spec.name for d in datasets if d.val]
    recipe_lines = "\n".join(f"- `{key}`: {value}" for key, value in asdict(recipe).items())
    return f"""# dessam default teacher

A promptable nucleus segmenter of SAM's design: a {arch['encoder']} image encoder (stride {arch['stride']}, widths
{arch['widths']}) in front of Segment Anything's own prompt encoder and mask decoder at width
{arch['prompt_dim']}; {params / 1e6:.2f} M parameters. Given an image and a box around a nucleus, it draws that
nucleus's mask. It is `--sam default` in dessam: DES-SAM's frozen teacher, and what `dessam label --sam default`
uses.
{views_paragraph(arch, recipe, base_sha256)}
**Licence of these weights:** {licence_text(terms)}.

## Training data (corpus `{corpus.path.name}`)

{corpus_table(datasets)}

Held-out images are chosen by a hash of their names ({', '.join(f"{d.spec.name}: {d.spec.val_fraction:g}" for d in datasets if not d.synthetic)} of
each dataset) and never trained on.

## Held-out box-prompt IoU

Mean mask IoU of every held-out nucleus prompted with its own box, through dessam's prediction pipeline
(at most {recipe.val_limit} images per dataset).

{validation_table(history, names)}

## How it was trained

{steps} steps of {recipe.batch_size} crops of {recipe.crop} px, each rescaled 0.5-2 x, turned, flipped and recoloured
(HED stain jitter, grey, inverted fluorescence, brightness, contrast, gamma, blur, noise); up to {recipe.max_prompts}
nuclei prompted per crop with boxes jittered as a detector's err; AdamW with warm-up and cosine decay.
{seconds / 60:.0f} minutes on {platform.machine()} ({platform.processor() or 'CPU'}).

{recipe_lines}

Command: `{command or '(from the Python API)'}`

Date: {datetime.date.today().isoformat()}
"""
