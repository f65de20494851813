"""The `dessam` command: argument parsing only; each sub-command calls one function.

A user mistake (`DessamError`) is printed as one line, without a traceback, with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from .errors import DessamError


# ----- sub-commands --------------------------------------------------------------------------
# `dessam train`'s flags and the settings they set, in the order they apply (after --preset and --config)
TRAIN_FLAGS = (("sam", "model.sam"), ("sam_checkpoint", "model.sam_checkpoint"), ("epochs", "train.epochs"),
               ("max_iters", "train.max_iters"), ("device", "train.device"), ("image_size", "model.image_size"),
               ("batch_size", "train.batch_size"), ("seed", "train.seed"), ("lr", "train.lr"),
               ("cache_dir", "train.cache_dir"), ("pixel_size", "train.pixel_size_um"),
               ("mask_weight", "loss.mask_weight"), ("init", "train.init"))


def cmd_train(args) -> int:
    from .config import Config, parse_set
    from .presets import implied_preset
    from .training.train import train

    overrides = {key: getattr(args, flag) for flag, key in TRAIN_FLAGS if getattr(args, flag) not in (None, "")}
    if args.no_edge_loss:
        overrides["loss.edge_aware"] = False
    if args.no_prompt_token:
        overrides["model.prompt_token"] = False
    overrides.update(parse_set(args.set))
    preset = args.preset or (None if args.config else implied_preset(args.sam))
    config = Config.compose(preset, args.config or None, overrides)
    _say_teacher_terms(config.model.sam, config.model.sam_checkpoint)
    if not args.skip_validation:
        from .data.validate import raise_on_errors, validate_coco

        raise_on_errors(validate_coco(args.train, args.images, decode=False, progress=not args.quiet))
    result = train(config, args.train, args.images, args.out, val_json=args.val, resume=args.resume,
                   progress=not args.quiet)
    from .training.distributed import current

    if not current().is_main:  # under torchrun only rank 0 reports (it alone writes)
        return 0
    print(f"model written to {result.model_path} ({result.iterations} iterations, {result.epochs_done} epochs; "
          f"{result.clipped_boxes} boxes clipped, {result.dropped_boxes} zero-size boxes dropped, "
          f"{result.skipped_nonfinite} non-finite steps skipped)")
    print(f"annotations supervised with masks: {result.mask_annotations}, with boxes: {result.box_annotations}")
    print(f"weights {result.start}")
    _write_card(result, args.train)
    return 0


def _write_card(result, train_json) -> None:
    """RUN/model.md: what the model was trained on, the licence its weights inherit, what it stores."""
    from .atomic import write_text_atomic
    from .models.model_file import read_model_file
    from .training.model_card import trained_model_card

    card = result.model_path.with_suffix(".md")
    write_text_atomic(card, trained_model_card(read_model_file(result.model_path), result, train_json,
                                               " ".join(["dessam"] + sys.argv[1:])))
    print(f"licence of {result.model_path}: {result.terms.words}"
          + (f" (research use only; {PERMISSIVE_SAM} trains an Apache-2.0 model)" if result.terms.non_commercial else "")
          + f"; model card: {card}")


def _settings(args):
    """Inference settings from --precision / --compile on top of the device's fast path."""
    from dataclasses import replace

    from .devices import resolve_device
    from .inference.settings import fast_settings

    if args.precision == "int8":
        raise DessamError("--precision int8 is the ONNX engine's; use --engine onnx, or fp32 / bf16 / fp16")
    base = fast_settings(resolve_device(args.device))
    return replace(base, precision=args.precision, compile=base.compile if args.compile is None else args.compile)


SLIDE_SIDE = 8192   # dessam synth --slide: the default side of the synthetic slide
PERMISSIVE_MODEL = "--model pretrained-permissive"
PERMISSIVE_SAM = "--sam default-permissive"
NUCLEUS_SIZE_HELP = ("the images' typical nucleus diameter in pixels: models that bring every image to one nucleus "
                     "size (model.input_scaling nucleus, the cpu preset's) then skip their estimate; others say it "
                     "plays no part")


def _model_path(args) -> str:
    """--model, or the bundled pretrained model (said in one line on stderr, with its licence); a
    model whose weights are non-commercial is named so in one line."""
    from .inference.engines import model_file_terms
    from .models.bundled import PRETRAINED_NAME, bundled_models, model_card, resolve_model

    if args.model:
        path = resolve_model(args.model)
        if path.is_file():
            terms = model_file_terms(path)
            if terms.non_commercial:
                print(f"dessam: {terms.notice(f'the model {path.name}', PERMISSIVE_MODEL)}", file=sys.stderr)
        return str(args.model)
    path = bundled_models().get(PRETRAINED_NAME)
    if path is None:
        raise DessamError("no --model given and this installation has no bundled pretrained model; "
                          "pass --model RUN/model.pt")
    terms = model_file_terms(path)
    licence = terms.notice("it", PERMISSIVE_MODEL) if terms.non_commercial else terms.words
    print(f"dessam: using the bundled pretrained model {path.name} ({licence}; model card: {model_card(path)}); "
          f"pass --model RUN/model.pt for your own", file=sys.stderr)
    return str(path)


def _input_size(model) -> int:
    """The input size of a model file (or a bundled model's name), read without building the model."""
    from .inference.engines import model_input_size
    from .models.bundled import resolve_model

    return model_input_size(resolve_model(model))


def _say_reference_terms(model) -> None:
    """One line on stderr when `eval --baselines` adds the row of a non-commercial bundled model."""
    from .models.bundled import PRETRAINED_NAME, bundled_models, resolve_model
    from .models.model_file import read_model_file
    from .models.weights_terms import model_terms

    bundled = bundled_models().get(PRETRAINED_NAME)
    if bundled is None or resolve_model(model).resolve() == bundled.resolve():
        return
    terms = model_terms(read_model_file(bundled))
    if terms.non_commercial:
        print(f"dessam: the row 'pretrained (bundled)' that --baselines adds comes from {terms.words} weights: "
              "research use only", file=sys.stderr)


def _say_teacher_terms(name: str, checkpoint) -> None:
    """One line on stderr when the teacher `--sam NAME` is under non-commercial terms."""
    from .models.default_teacher import is_default_teacher
    from .models.weights_terms import sam_terms

    if not (is_default_teacher(name) or (checkpoint and Path(checkpoint).is_file())):
        return
    terms = sam_terms(name, checkpoint)
    if terms.non_commercial:
        print(f"dessam: {terms.notice(f'the teacher {name}, and any model trained on it,', PERMISSIVE_SAM)}",
              file=sys.stderr)


def _load(args, path: Optional[str] = None):
    """The model of --model (`path` when `_model_path` gave it already) on the engine of --engine
    (PyTorch's settings only when it runs)."""
    from .inference.engines import choose_engine, load_predictor

    engine = choose_engine(args.engine, args.device)
    settings = _settings(args) if engine == "torch" else None
    return load_predictor(path or _model_path(args), engine, args.device, args.sam_checkpoint,
                          getattr(args, "image_size", None), settings, precision=args.precision, threads=args.threads,
                          progress=not args.quiet)


def cmd_predict(args) -> int:
    from dataclasses import replace

    from .outputs.files import FORMATS, check_options, expand_inputs, parse_shard, predict_files, writable_folder
    from .outputs.slides import SlideOptions

    formats = FORMATS if args.formats is None else tuple(f for f in args.formats.split(",") if f)
    _check_scale_options(args)
    paths = expand_inputs(args.inputs)  # a wrong input, option, model or output is told before the model loads
    slide_options = SlideOptions(skip_glass=not args.no_skip_glass, compress_geojson=args.gzip, resume=args.resume,
                                 roi=args.roi,
                                 tissue={"min_od": args.tissue_threshold} if args.tissue_threshold is not None else {})
    path = _model_path(args)
    check_options(args.image_size or _input_size(path), paths, args.pixel_size, args.overlap, slide_options)
    writable_folder(args.out, keep=False)
    model = _load(args, path)
    overrides = {key: value for key, value in (("score_threshold", args.score_threshold),
                                               ("max_detections", args.max_detections)) if value is not None}
    postprocess = replace(model.postprocess, **overrides)
    tile = None if args.tile == "auto" else args.tile == "on"
    _scale_note(model, args)
    run = predict_files(model, args.inputs, args.out, formats, overwrite=args.overwrite,
                        pixel_size_um=args.pixel_size, tile=tile, overlap=args.overlap, progress=not args.quiet,
                        postprocess=postprocess, slide_options=slide_options, shard=parse_shard(args.shard),
                        nucleus_size=args.nucleus_size)
    print(f"{len(run.written)} images predicted into {args.out}"
          + (f", {len(run.skipped)} kept existing outputs (use --overwrite)" if run.skipped else ""))
    if run.failed:
        print(f"{len(run.failed)} images failed:", file=sys.stderr)
        for path, message in run.failed:
            print(f"  {path}: {message}", file=sys.stderr)
    return run.exit_status


def _check_scale_options(args) -> None:
    """--pixel-size and --nucleus-size refused up front when they cannot be sizes."""
    from .geometry.scale import check_nucleus_size, check_pixel_size

    check_pixel_size(args.pixel_size)
    check_nucleus_size(getattr(args, "nucleus_size", None))


def _scale_note(model, args) -> None:
    """The one line that says how --pixel-size and --nucleus-size bring images to this model."""
    note = model.scale_note(args.pixel_size, getattr(args, "nucleus_size", None))
    if note:
        print(f"dessam: {note}", file=sys.stderr)


def _model_or_sam(args, missing: str) -> None:
    """A command that takes a model or SAM alone gets exactly one of them (`missing`: the error without)."""
    if args.model is None and args.sam is None:
        raise DessamError(missing)
    if args.model is not None and args.sam is not None:
        raise DessamError(f"{args.model}: give --model or --sam, not both (the model names its own SAM)")


def cmd_label(args) -> int:
    from .inference.engines import choose_engine, load_predictor, onnx_precision, onnx_teacher
    from .labeling.label import label_dataset

    _model_or_sam(args, f"{args.data}: give --model RUN/model.pt (the trained student) or --sam NAME (the frozen "
                        "teacher, e.g. --sam default) to label its boxes")
    if args.input_scale is not None and not args.input_scale > 0:
        raise DessamError(f"--input-scale {args.input_scale}: use a positive factor")
    from .geometry.tiling import check_tiling
    from .models.sam import sam_input_size

    path = _model_path(args) if args.model is not None else None
    check_tiling(args.image_size or (_input_size(path) if path else sam_input_size(args.sam, args.sam_checkpoint)),
                 args.overlap)  # before anything is loaded or exported
    engine = choose_engine(args.engine, args.device)
    if args.model is not None:
        model = load_predictor(path, engine, args.device, args.sam_checkpoint, args.image_size,
                               input_scale=args.input_scale, progress=not args.quiet)
    elif engine == "onnx":
        _say_teacher_terms(args.sam, args.sam_checkpoint)
        model = onnx_teacher(args.sam, args.sam_checkpoint, args.image_size, precision=onnx_precision("auto"),
                             cuda=str(args.device).startswith("cuda"),
                             input_scale=1.0 if args.input_scale is None else args.input_scale, progress=not args.quiet)
    else:
        from .inference.loading import load_teacher

        _say_teacher_terms(args.sam, args.sam_checkpoint)
        model = load_teacher(args.sam, args.sam_checkpoint, device=args.device, image_size=args.image_size,
                             input_scale=1.0 if args.input_scale is None else args.input_scale)
    options = {key: value for key, value in (("outside_margin", args.outside_margin),
                                             ("outside_limit", args.outside_fraction),
                                             ("review_count", args.review_count)) if value is not None}
    run = label_dataset(model, args.data, args.images, args.out, review_dir=args.review,
                        use_token=args.model is not None, overlap=args.overlap, progress=not args.quiet, **options)
    where = f"label_flags in {run.out_json}" + (f" and {run.review[1]}" if run.review else "")
    print(f"{run.labelled} boxes of {run.images} images labelled into {run.out_json} "
          f"({'student' if args.model else 'teacher'} masks); {run.empty} empty, {run.outside} leaving their box "
          f"(listed in {where})" + (f"; {run.crowd} crowd annotations copied unchanged" if run.crowd else ""))
    return 0


def cmd_fetch_sam(args) -> int:
    from .models.fetch import fetch_sam

    path = fetch_sam(args.variant, args.dir, progress=not args.quiet)
    print(path)
    return 0


def _synth_slide(args) -> int:
    from .data.synth_slide import make_synthetic_slide, truth_paths
    from .outputs.slide_writers import GeoJSONWriter

    if args.out:
        raise DessamError(f"--out {args.out} and --slide {args.slide}: give one (--out DIR for fields, --slide FILE "
                          "for a whole slide)")
    if len(args.slide_size) not in (1, 2):
        raise DessamError(f"--slide-size {' '.join(map(str, args.slide_size))}: give WIDTH HEIGHT or one side in pixels")
    width, height = args.slide_size * (3 - len(args.slide_size))
    if min(width, height) < 1 or not args.pixel_size > 0 or not 0 <= args.cell_fraction <= 0.5:
        raise DessamError("--slide-size and --pixel-size must be positive and --cell-fraction between 0 and 0.5; "
                          "fix the numbers")
    labels, boxes, geojson = truth_paths(args.slide)
    with GeoJSONWriter(geojson) as truth:
        result = make_synthetic_slide(args.slide, width, height, args.pixel_size, on_nucleus=truth.add,
                                      cell_fraction=args.cell_fraction, seed=args.seed, layout=args.slide_format)
    print(result)
    print(f"ground truth: {labels} (label image), {boxes} (boxes), {geojson} (QuPath: File > Import objects)")
    return 0


def cmd_synth(args) -> int:
    from .data.synth import make_dataset

    if args.slide:
        return _synth_slide(args)
    if not args.out:
        raise DessamError("give --out DIR for a dataset of fields, or --slide FILE for a whole slide")
    out = make_dataset(args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, scene=args.scene,
                       shift=args.shift, seed=args.seed, size=args.size)
    print(f"synthetic cytology written to {out} (preview: {Path(out) / 'preview.png'})")
    return 0


def cmd_convert(args) -> int:
    from .data.convert import convert

    options = {"classes": args.classes, "tile_size": args.tile_size, "pixel_size_um": args.pixel_size,
               "tiles_dir": args.tiles}
    print(convert(args.format, args.src, args.images, args.out, mat_key=args.mat_key, label_suffix=args.label_suffix,
                  **{k: v for k, v in options.items() if v is not None}))
    return 0


def cmd_validate(args) -> int:
    from .data.validate import raise_on_errors, validate_coco

    report = validate_coco(args.file, args.images, decode=not args.headers_only)
    print(report.text())
    raise_on_errors(report)
    return 0


def cmd_eval(args) -> int:
    from .evaluation.evaluate import evaluate_model_file
    from .inference.engines import choose_engine

    _check_scale_options(args)
    model = _model_path(args)
    if args.baselines and args.model:
        _say_reference_terms(model)
    engine = choose_engine(args.engine, args.device)
    evaluate_model_file(model, args.data, args.images, args.out, sam_checkpoint=args.sam_checkpoint,
                        device=args.device, settings=_settings(args) if engine == "torch" else None,
                        engine=engine, precision=args.precision, threads=args.threads, baselines=args.baselines,
                        score_threshold=args.score_threshold, pixel_size_um=args.pixel_size,
                        remove_small=not args.no_small_removal, min_size=args.min_size, progress=not args.quiet,
                        nucleus_size=args.nucleus_size, on_model=lambda model: _scale_note(model, args))
    print((Path(args.out) / "metrics.md").read_text())
    return 0


def cmd_compare(args) -> int:
    from .evaluation.compare import compare_reports

    print(compare_reports(args.reports, out_path=args.out, names=args.names))
    return 0


def cmd_demo(args) -> int:
    from .demo import pin_cpu_math, run_demo

    pin_cpu_math()   # before PyTorch loads
    run_demo(args.out, quick=args.quick, progress=not args.quiet)
    return 0


def cmd_pretrain_teacher(args) -> int:
    from .training.pretrain_teacher import Recipe, pretrain_teacher

    options = {key: getattr(args, key) for key in ("steps", "batch_size", "crop", "max_prompts", "lr", "seed", "arch",
                                                   "eval_every", "nucleus_px", "views_from", "view_size", "view_context")
               if getattr(args, key) is not None}
    if args.resume and options:
        raise DessamError(f"--resume continues {args.out} with its own recipe; leave out {', '.join(sorted(options))}")
    result = pretrain_teacher(args.corpus, args.out, None if args.resume else Recipe(**options), resume=args.resume,
                              device=args.device, threads=args.threads, command=" ".join(["dessam"] + sys.argv[1:]),
                              progress=not args.quiet)
    scores = ", ".join(f"{name} {value:.3f}" for name, value in result.validation.items())
    print(f"teacher written to {result.teacher_path} after {result.steps_done} steps; held-out box-prompt IoU: "
          f"{scores}; model card: {result.card_path}")
    return 0


def cmd_pretrain_model(args) -> int:
    from .pretrain_model import pretrain_model

    from .config import parse_set

    result = pretrain_model(args.corpus, args.teacher, args.out, max_iters=args.max_iters, epochs=args.epochs,
                            synthetic_images=args.synthetic_images, seed=args.seed, resume=args.resume,
                            command=" ".join(["dessam"] + sys.argv[1:]), progress=not args.quiet, init=args.init,
                            config_file=args.config, overrides=parse_set(args.set), size_steps=args.size_steps)
    scores = "; ".join(f"{name}: AJI {m['aji']:.3f}, detection F1 {m['f1']:.3f}" for name, m in result.validation.items())
    print(f"model written to {result.model_path}; held-out sets: {scores or 'none'}; model card: {result.card_path}")
    return 0


def cmd_export(args) -> int:
    from .inference.export import check_export, export_model

    _model_or_sam(args, f"{args.out}: give the model to export (MODEL: a model.pt or a bundled model's name), "
                        "or --sam NAME for SAM alone")
    import torch

    from .inference.loading import load_model, load_teacher
    from .models.bundled import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model is not None:
        path = resolve_model(args.model)
        predictor = load_model(path, "cpu", args.sam_checkpoint, args.image_size)
    else:
        path, predictor = None, load_teacher(args.sam, args.sam_checkpoint, "cpu", args.image_size)
    manifest = export_model(predictor, args.out, model_path=path)
    print(f"graphs and manifest written to {manifest.parent} ({', '.join(sorted(p.name for p in manifest.parent.glob('*.onnx')))})")
    if args.check:
        from .data.images import read_image

        print(f"\nEach graph against PyTorch on {args.check} (the same inputs for both):\n")
        print("| graph | compared | largest absolute difference | |")
        print("|---|---|---:|---|")
        for graph, what, difference, note in check_export(predictor, manifest.parent, read_image(args.check), args.threads):
            print(f"| {graph} | {what} | {difference:.3g} | {note} |")
    return 0


def cmd_bench(args) -> int:
    from .bench import run_bench

    report = run_bench(device=args.device, quick=args.quick, out=args.out, compile=args.compile, model=args.model,
                       data=args.data, images=args.images, progress=not args.quiet)
    print(report.text)
    return 0 if report.passed else 1


# ----- parser --------------------------------------------------------------------------------
class FromConfig:
    """A help text whose defaults are read, when help is shown, from the configuration they describe
    (the bundled model's stored settings, a preset, the pre-training recipe), so that `--help` cannot
    disagree with what a command does."""

    def __init__(self, text):
        self.text = text   # a function giving the text

    def __str__(self) -> str:
        return self.text().replace("%", "%%")

    def strip(self) -> str:
        return str(self).strip()


class HelpFormatter(argparse.HelpFormatter):
    def _get_help_string(self, action):
        return str(action.help)


class Parser(argparse.ArgumentParser):
    """argparse with help texts that may be `FromConfig` (sub-commands' parsers are of this class too)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def shown(value) -> str:
    """A default as help shows it."""
    if value is None:
        return "none"
    return format(value, "g") if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def bundled_setting(key: str) -> str:
    """A setting stored in the bundled pretrained model ("section.key"), as help shows it: read from
    its model card's statement of the stored post-processing, which a test holds to the file (reading
    the file itself means importing PyTorch, seconds for a help text), else from the file."""
    from .models.bundled import PRETRAINED_NAME, bundled_models, model_card
    from .training.model_card import stated_settings

    path = bundled_models().get(PRETRAINED_NAME)
    if path is None:
        return "none bundled"
    card = model_card(path)
    stated = stated_settings(card.read_text(encoding="utf-8")) if card.is_file() else {}
    if key not in stated:
        from .config import settings_by_key
        from .models.model_file import read_model_file

        stated = settings_by_key(read_model_file(path).config.to_dict())
    return shown(stated[key])


def preset_setting(preset: str, key: str) -> str:
    from .config import Config, settings_by_key

    return shown(settings_by_key(Config.compose(preset).to_dict())[key])


def model_default(text: str, key: str, unit: str = "") -> FromConfig:
    """`text` with the default of a setting a model file stores: the model's own, and the bundled one's."""
    return FromConfig(lambda: f"{text} (default: the model's own; the bundled pretrained model's: "
                              f"{bundled_setting(key)}{unit})")


def preset_default(text: str, key: str) -> FromConfig:
    """`text` with a training setting's default in the preset `--sam` implies (`dessam.presets`)."""
    return FromConfig(lambda: f"{text} (default: {preset_setting('cpu', key)} with --sam default, the cpu preset; "
                              f"{preset_setting('patchseg', key)} with SAM ViT, patchseg)")


def recipe_default(text: str, name: str) -> FromConfig:
    """`text` with the default of a field of pretrain-teacher's `Recipe`."""
    def build() -> str:
        import dataclasses

        from .training.pretrain_teacher import Recipe

        default = next(f.default for f in dataclasses.fields(Recipe) if f.name == name)
        return text.format(default=shown(default))
    return FromConfig(build)


def constant_default(text: str, module: str, name: str) -> FromConfig:
    """`text` with a default that lives as the constant `name` of the dessam module `module`."""
    def build() -> str:
        import importlib

        return text.format(default=shown(getattr(importlib.import_module(f"dessam.{module}"), name)))
    return FromConfig(build)


def _model_options(parser):
    parser.add_argument("--model", help="a trained model (RUN/model.pt); default: the bundled pretrained model")
    parser.add_argument("--sam-checkpoint", help="the SAM checkpoint the model was trained with, if not found")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--engine", choices=("auto", "torch", "onnx"), default="auto",
                        help="torch, or onnx: the model's graphs run by ONNX Runtime (exported on first use into the "
                             "user's cache); auto (default): onnx on a CPU when the ONNX extra is installed, else torch")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16", "int8"), default="auto",
                        help="auto: bf16 encoder / fp16 decoder on CUDA, fp32 on CPU; fp32 = the reference path; "
                             "int8: the ONNX engine's dynamically quantised graphs")
    parser.add_argument("--threads", type=int, help="CPU threads of the ONNX engine (default: one per core)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the encoder and decoder (default: on for large CUDA jobs)")


def build_parser() -> argparse.ArgumentParser:
    from .presets import REGISTRY

    parser = Parser(prog="dessam", description="Nucleus instance segmentation trained from boxes (DES-SAM).")
    parser.add_argument("--version", action="version", version=f"dessam {__import__('dessam').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train DES-SAM from box annotations (COCO)")
    p.add_argument("--train", required=True,
                   help="COCO JSON with boxes; segmentations, where given, supervise their nuclei's masks")
    p.add_argument("--images", required=True, help="folder of the images named in the JSON")
    p.add_argument("--sam", help="vit_b | vit_l | vit_h | default | default-permissive | tiny, or an official checkpoint path")
    p.add_argument("--sam-checkpoint", help="path of the SAM checkpoint (.pth) for --sam vit_*")
    p.add_argument("--out", required=True, help="run folder (model.pt, log.csv, checkpoints/)")
    p.add_argument("--val", help="COCO JSON of validation images (losses written to RUN/val.csv)")
    p.add_argument("--epochs", type=int, help=preset_default("training epochs", "train.epochs"))
    p.add_argument("--max-iters", type=int, help="stop after this many iterations (default: the epochs decide)")
    p.add_argument("--batch-size", type=int, help=preset_default("images per step", "train.batch_size"))
    p.add_argument("--lr", type=float, help=preset_default(
        "learning rate at train.lr_reference_batch images per step (scaled to the real batch)", "train.lr"))
    p.add_argument("--image-size", type=int, help=preset_default("input size S; none: the SAM's own", "model.image_size"))
    p.add_argument("--seed", type=int)
    p.add_argument("--cache-dir", help="where to cache SAM embeddings (default RUN/cache)")
    p.add_argument("--pixel-size", type=float, help="the training images' pixel size in microns (recorded in the model)")
    p.add_argument("--mask-weight", type=float, help=preset_default(
        "distillation weight of the prompts supervised by a given mask", "loss.mask_weight"))
    p.add_argument("--init", metavar="auto|pretrained|scratch|MODEL.pt",
                   help="where the detector and token start: auto (default: the bundled pretrained model with "
                        "--sam default), pretrained, scratch (random, the authors' way) or a model.pt to fine-tune")
    p.add_argument("--preset", choices=sorted(REGISTRY), help="start from a named configuration: " + "; ".join(
        f"{name}: {REGISTRY[name].help}" for name in sorted(REGISTRY)))
    p.add_argument("--config", help="YAML file with model/loss/train settings (applied after --preset)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="override one setting")
    p.add_argument("--no-edge-loss", action="store_true", help="ablation: train without the edge-aware loss")
    p.add_argument("--no-prompt-token", action="store_true", help="ablation: no learnable prompt token")
    p.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last.pt")
    p.add_argument("--device", help="cpu, cuda or auto")
    p.add_argument("--skip-validation", action="store_true", help="do not check the dataset before training")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="segment nuclei in images, folders or globs")
    _model_options(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--formats", help=f"comma-separated outputs (default all: labels,overlay,geojson,csv)")
    p.add_argument("--tile", choices=("auto", "on", "off"), default="auto",
                   help="cut large fields into tiles at the training scale (default: auto)")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels (default %(default)s)")
    p.add_argument("--pixel-size", type=float,
                   help="the images' pixel size in microns: brings them to the model's scale, measurements in um")
    p.add_argument("--nucleus-size", type=float, metavar="PX",
                   help=NUCLEUS_SIZE_HELP)
    p.add_argument("--score-threshold", type=float,
                   help=model_default("detection score threshold", "model.postprocess.score_threshold"))
    p.add_argument("--max-detections", type=int,
                   help=model_default("most nuclei per image or tile", "model.postprocess.max_detections"))
    p.add_argument("--image-size", type=int, help="run at another input size than trained")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--roi", help="whole slides: only this region, x,y,w,h in full-resolution pixels")
    p.add_argument("--no-skip-glass", action="store_true",
                   help="whole slides: run every window, not only those touching the tissue/cell mask")
    p.add_argument("--tissue-threshold", type=float,
                   help=constant_default("whole slides: the lowest optical density that counts as cells "
                                         "(default {default})", "data.tissue", "MIN_OD"))
    p.add_argument("--gzip", action="store_true", help="whole slides: write NAME.geojson.gz")
    p.add_argument("--resume", action="store_true", help="whole slides: continue an interrupted run from its last row")
    p.add_argument("--shard", metavar="K/N", help="only the K-th of every N inputs (array jobs: K = the task index)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("eval", help="score a model on a masked test set (AJI, PQ, Dice, Hausdorff, AP, ...)")
    _model_options(p)
    p.add_argument("--data", required=True, help="COCO JSON with masks")
    p.add_argument("--images", required=True)
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--baselines", action="store_true",
                   help="also box-as-mask, box-otsu and training-free SAM from the same detections, and every "
                        "mask source from the ground-truth boxes")
    p.add_argument("--score-threshold", type=float,
                   help=model_default("detection score threshold", "model.postprocess.score_threshold"))
    p.add_argument("--pixel-size", type=float, help="the test images' pixel size in microns (brings them to the model's scale)")
    p.add_argument("--nucleus-size", type=float, metavar="PX",
                   help=NUCLEUS_SIZE_HELP)
    p.add_argument("--no-small-removal", action="store_true", help="keep holes and islands under --min-size")
    p.add_argument("--min-size", type=int, help=model_default("holes and islands under this many pixels are removed",
                                                               "model.postprocess.min_size", " px"))
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="merge several eval reports into one Markdown table")
    p.add_argument("reports", nargs="+", metavar="REPORT")
    p.add_argument("--out", help="write the table to this Markdown file too")
    p.add_argument("--names", nargs="+", help="a name per report (default: the folder names)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("synth", help="write a synthetic cervical cytology dataset, or a synthetic whole slide")
    p.add_argument("--out", help="dataset folder")
    p.add_argument("--n-train", type=int, default=100)
    p.add_argument("--n-val", type=int, default=10)
    p.add_argument("--n-test", type=int, default=20)
    p.add_argument("--scene", choices=("patch", "cluster", "mixed"), default="mixed")
    p.add_argument("--shift", action="store_true", help="another stain palette, scale, blur and noise")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=256, help="field size in pixels")
    p.add_argument("--slide", metavar="FILE", help="write one pyramidal whole slide instead (.svs, .tif or .ome.tif), "
                   "its ground truth beside it")
    p.add_argument("--slide-size", nargs="+", type=int, default=[SLIDE_SIDE], metavar="PX",
                   help=f"slide WIDTH HEIGHT in pixels, or one side of a square (default {SLIDE_SIDE})")
    p.add_argument("--pixel-size", type=float, default=0.5,
                   help="microns per pixel written in the slide (default %(default)s, at which the synthetic cells "
                        "are life-size)")
    p.add_argument("--cell-fraction", type=float, default=0.03, help="share of the slide covered by cell groups "
                   "(default %(default)s; the rest is glass)")
    p.add_argument("--slide-format", choices=("svs", "ome"),
                   help="Aperio SVS layout or OME-TIFF (default: OME-TIFF for .ome.tif names, else SVS)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("convert", help="convert annotations to COCO JSON")
    p.add_argument("--from", dest="format", required=True,
                   choices=("labels", "labelme", "mat", "npy", "voc", "yolo", "coco", "geojson", "csv", "dsb",
                            "aperio-xml"))
    p.add_argument("src", help="annotation file or folder (dsb: the folder of ID/images, ID/masks folders)")
    p.add_argument("--images", help="folder holding the images (dsb: default the source folder)")
    p.add_argument("--out", required=True, help="COCO JSON to write")
    p.add_argument("--mat-key", help="variable name in .mat files (default inst_map)")
    p.add_argument("--label-suffix", help="suffix of label images after the image stem")
    p.add_argument("--classes", nargs="+", metavar="NAME",
                   help="keep only these classes (labelme, voc, geojson: names; yolo: class numbers)")
    p.add_argument("--pixel-size", type=float, help="slides: microns per pixel of the training tiles "
                   "(default: the slide's own, at full resolution)")
    p.add_argument("--tile-size", type=int, help=constant_default(
        "slides: side of the training tiles in pixels (default {default})", "data.convert", "TILE_SIZE"))
    p.add_argument("--tiles", help="slides: folder for the training tiles (default: OUT_tiles beside --out)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("validate", help="check a COCO file and its images before training")
    p.add_argument("file")
    p.add_argument("--images", required=True)
    p.add_argument("--headers-only", action="store_true", help="read image headers only (faster)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("label", help="write a mask for every annotated box (COCO), with scores and a review sheet")
    p.add_argument("--data", required=True, help="COCO JSON with boxes")
    p.add_argument("--images", required=True, help="folder of the images named in the JSON")
    p.add_argument("--out", required=True, help="COCO JSON to write, with an RLE mask per box")
    p.add_argument("--model", help="a trained model (RUN/model.pt): masks of the student and its learned token")
    p.add_argument("--sam", help="or the frozen teacher: vit_b | vit_l | vit_h | default | default-permissive, or a checkpoint path")
    p.add_argument("--sam-checkpoint", help="the SAM checkpoint (.pth) of --sam, or of the model if not found")
    p.add_argument("--review", help="folder for the review sheet (review.png, review.csv)")
    p.add_argument("--review-count", type=int, help=constant_default(
        "masks in the review mosaic (default {default})", "labeling.label", "REVIEW_COUNT"))
    p.add_argument("--image-size", type=int, help="model input size S (default: the model's or the SAM's own)")
    p.add_argument("--input-scale", type=float,
                   help="resize images by this factor; larger ones are cut into windows of the input size "
                        "(default: the model's training scale; the teacher: 1)")
    p.add_argument("--overlap", type=int, default=64, help="window overlap in pixels (default %(default)s)")
    p.add_argument("--engine", choices=("auto", "torch", "onnx"), default="auto",
                   help="torch or onnx (ONNX Runtime); auto: onnx on a CPU when the ONNX extra is installed")
    p.add_argument("--outside-fraction", type=float,
                   help=constant_default("flag masks with more than this share of their pixels outside the grown box "
                                         "(default {default})", "labeling.label", "OUTSIDE_FRACTION"))
    p.add_argument("--outside-margin", type=float,
                   help=constant_default("the box grows by this fraction of its width and height on each side "
                                         "(default {default})", "labeling.label", "OUTSIDE_MARGIN"))
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("fetch-sam", help="download an official SAM checkpoint")
    p.add_argument("variant", choices=("vit_b", "vit_l", "vit_h"))
    p.add_argument("--dir", help="target folder (default ~/.cache/dessam or $DESSAM_HOME)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_fetch_sam)

    p = sub.add_parser("demo", help="synthetic data -> training from boxes -> evaluation with baselines")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--quick", action="store_true", help="a much shorter run (for checks)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("pretrain-teacher", help="pre-train the default teacher on a corpus of nucleus datasets")
    p.add_argument("--corpus", required=True, help="corpus manifest (YAML: each dataset's path, format, licence, weight)")
    p.add_argument("--out", required=True, help="run folder (teacher.pt, teacher.md, log.csv, checkpoints/)")
    p.add_argument("--steps", type=int, help=recipe_default(
        "training steps (default {default}; the step count, not the clock, decides the result)", "steps"))
    p.add_argument("--batch-size", type=int, help=recipe_default("crops per step (default {default})", "batch_size"))
    p.add_argument("--crop", type=int, help=recipe_default("crop side in pixels, a multiple of 16 (default {default})",
                                                           "crop"))
    p.add_argument("--max-prompts", type=int, help=recipe_default("boxes prompted per crop (default {default})",
                                                                  "max_prompts"))
    p.add_argument("--lr", type=float, help=recipe_default("peak learning rate (AdamW, cosine schedule; default {default})",
                                                           "lr"))
    p.add_argument("--arch", choices=("small", "medium", "conv"),
                   help="encoder: small (default), medium, or conv (the stride-8 encoder of the first teacher)")
    p.add_argument("--seed", type=int)
    p.add_argument("--eval-every", type=int, help=recipe_default(
        "validate and save every this many steps (default {default})", "eval_every"))
    p.add_argument("--nucleus-px", type=float, help="rescale each image around the size that makes its median "
                   "nucleus this many pixels wide (default: around its own scale)")
    p.add_argument("--views-from", metavar="TEACHER",
                   help="train a teacher that segments each box on a view of its own, on top of this teacher "
                        "(a bundled name or a teacher.pt, whose whole-image encoder it keeps for the detector)")
    p.add_argument("--view-size", type=int, help=recipe_default(
        "pixels across each box's view, a multiple of 16 (default {default})", "view_size"))
    p.add_argument("--view-context", type=float, help=recipe_default(
        "each view spans this many times its box's longer side (default {default})", "view_context"))
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoints/last.pt with its recipe")
    p.add_argument("--threads", type=int, help="CPU threads (1 gives bit-identical results across machines)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_pretrain_teacher)

    p = sub.add_parser("pretrain-model", help="pre-train a whole DES-SAM model on a corpus, from its boxes only")
    p.add_argument("--corpus", required=True, help="corpus manifest (YAML), as for pretrain-teacher")
    p.add_argument("--teacher", required=True, help="the default-teacher file to train on (pretrain-teacher's teacher.pt)")
    p.add_argument("--out", required=True, help="run folder (model.pt, model.md, corpus/, val/, checkpoints/)")
    p.add_argument("--max-iters", type=int, help="stop after this many iterations (default: the epochs decide)")
    p.add_argument("--epochs", type=int, help=FromConfig(
        lambda: f"epochs over the corpus (default {preset_setting('cpu', 'train.epochs')}, the cpu preset's)"))
    p.add_argument("--synthetic-images", type=int, default=200,
                   help="scenes drawn per synthetic dataset (default %(default)s)")
    p.add_argument("--init", default="scratch", help="where the detector starts: scratch (default), or a model.pt "
                   "trained on this teacher or on the teacher it was built on (--views-from)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", help="YAML file of settings on top of the cpu preset")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="one setting on top of the cpu preset and --config (repeatable), e.g. train.copies=4")
    p.add_argument("--size-steps", type=int, default=1500,
                   help="steps of the nucleus-size head's training, none when zero (nucleus scaling; default 1500)")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoints/last.pt")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_pretrain_model)

    p = sub.add_parser("export", help="write a model's networks as ONNX graphs with a manifest (docs/onnx.md)")
    p.add_argument("model", nargs="?", metavar="MODEL", help="a model.pt, or a bundled model's name (pretrained)")
    p.add_argument("--sam", help="or SAM alone: default | default-permissive | vit_b | ..., to segment given boxes")
    p.add_argument("--sam-checkpoint", help="the SAM checkpoint of --sam, or of the model if not found")
    p.add_argument("--out", required=True, help="folder for the graphs and manifest.json")
    p.add_argument("--image-size", type=int, help="model input size S (default: the model's own)")
    p.add_argument("--check", metavar="IMAGE", help="run each graph against PyTorch on this image and print the "
                   "largest differences")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("bench", help="speed of the fast and the reference paths, measured in one run")
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", help="also write the table to this Markdown file")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--model", help="a trained model (RUN/model.pt); default: the bundled pretrained model (on a "
                   "CUDA machine without it: ViT-B with random weights)")
    p.add_argument("--images", help="a folder of your own images: end-to-end prediction on them")
    p.add_argument("--data", help="a COCO file with boxes for the images of --images: the training iteration")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DessamError as exc:
        print(f"dessam: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dessam: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
