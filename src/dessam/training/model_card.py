"""Model cards: what a pre-trained weight file was trained on, under which licence, and how well
it did on held-out data, written as Markdown beside the weights."""

from __future__ import annotations

import datetime
import platform
from dataclasses import asdict

from ..data.corpus import Corpus


def weights_licence(corpus: Corpus) -> str:
    """The licence the weights carry: a non-commercial dataset's terms pass on to them."""
    restricted = [d.name for d in corpus.datasets if d.non_commercial]
    if restricted:
        licences = sorted({d.licence for d in corpus.datasets if d.non_commercial})
        return (f"{' and '.join(licences)}: trained on {', '.join(restricted)}, whose non-commercial terms these "
                "weights inherit (research use; no commercial use)")
    return ("Apache-2.0, like dessam: trained only on data whose licences put no condition on the weights "
            f"({', '.join(corpus.licences)})")


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


def views_paragraph(arch: dict, recipe) -> str:
    """What a teacher that decodes on per-box views does with each box (empty for other teachers)."""
    views = arch.get("views")
    if not views:
        return ""
    return f"""
Each box is segmented on a view of its own: a square {views['context']:g} x the box's longer side (at least
{views['min_side']:g} px) resampled to {views['size']} x {views['size']} px and encoded by a second U-Net (widths
{views['widths']}), so that every nucleus is drawn at the same resolution whatever its size. The whole-image
encoder, which the detector reads, is that of `{recipe.views_from}`, kept frozen; the view encoder and SAM's
prompt encoder and mask decoder started from it and were trained on the views.
"""


def teacher_card(corpus: Corpus, datasets: list, recipe, history: list, steps: int, arch: dict, sam, command: str,
                 seconds: float) -> str:
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
{views_paragraph(arch, recipe)}
**Licence of these weights:** {weights_licence(corpus)}.

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
