"""Score a model on the held-out sets of a corpus, as `dessam pretrain-model` scores the model it trains.

    python benchmarks/held_out.py --corpus corpus/with-monuseg.yaml --model pretrained --out runs/held_out
    python benchmarks/held_out.py --corpus corpus/permissive.yaml --model pretrained-permissive --out runs/held_out_p

The held-out images (the same ones pretrain-model holds out: a hash of their names, and the synthetic
scenes of their own seed stream) are written with their masks under OUT/corpus/, each set is scored
with `dessam eval` at the model's stored post-processing (or `--score-threshold`), and the table of
the model card's "Held-out sets" section is printed. One thread, so that the numbers do not depend on
the machine's core count.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True, help="the corpus manifest the model was trained on")
    parser.add_argument("--model", required=True, help="a model.pt, or a bundled model's name")
    parser.add_argument("--out", required=True, help="work folder (held-out images and reports)")
    parser.add_argument("--score-threshold", type=float, help="default: the model's stored one")
    args = parser.parse_args(argv)

    import torch

    from dessam.data.corpus import LoadedDataset, load_dataset, read_manifest
    from dessam.config.runtime import Runtime
    from dessam.evaluation.evaluate import evaluate_model_file
    from dessam.models.bundled import resolve_model
    from dessam.pretrain.model import SUMMARY_METRICS, write_corpus_coco

    torch.set_num_threads(1)
    out = Path(args.out)
    corpus = read_manifest(args.corpus)
    held_out = []
    for spec in corpus.datasets:
        if "model" in spec.use:
            dataset = load_dataset(spec, progress=True)
            held_out.append(LoadedDataset(spec, [], dataset.val))   # the held-out images only
    _, images_dir, val_files = write_corpus_coco(held_out, out / "corpus", synthetic_images=0)
    rows = ["| held-out set | images | " + " | ".join(title for _, title in SUMMARY_METRICS) + " |",
            "|---|---:|" + "---:|" * len(SUMMARY_METRICS)]
    for dataset in held_out:
        name = dataset.spec.name
        report = evaluate_model_file(resolve_model(args.model), val_files[name], images_dir, out / "val" / name,
                                     runtime=Runtime(engine="torch", device="cpu"),
                                     score_threshold=args.score_threshold, progress=False)
        metrics = report["methods"]["des-sam"]
        rows.append(f"| {name} | {len(dataset.val)} | "
                    + " | ".join(f"{metrics.get(key, float('nan')):.3f}" for key, _ in SUMMARY_METRICS) + " |")
        print(rows[-1], flush=True)
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
