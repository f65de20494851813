"""How the code is laid out, in numbers: modules, the longest functions, and how far one command
travels through the layers.

    python benchmarks/structure.py [--src SRC] [--model MODEL.pt] [--data DIR] [--list]

SRC: the `src` folder of the checkout to measure (default: this one's). For `dessam predict` and
`dessam train` (a tiny model on a few synthetic fields, run in this process), it counts the dessam
modules whose functions are called and the climbs back up: calls from a module of a lower layer
(ARCHITECTURE.md, as declared in tests/test_architecture.py) into a module of a higher one, each
pair of modules counted once. A callback counts from the dessam function that passed it; frames of
other libraries (torch calling `forward`) are skipped to the nearest dessam caller. The runs use an
empty DESSAM_HOME of their own, and `dessam predict` is run once before the traced run, in a process of
its own, so that the count never includes a first use's export of the model's graphs into the cache.
"""

from __future__ import annotations

import argparse
import ast
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from test_architecture import LAYERS  # noqa: E402

# Modules of earlier layouts, by the layer their code belongs to now.
EARLIER = {"scale": "geometry", "postprocess": "inference", "export": "outputs", "export_slide": "outputs",
           "cli": "commands", "presets": "config", "measurements": "metrics", "losses": "models", "bench": "workflows",
           "demo": "workflows", "pretrain_model": "pretrain"}


def dessam_entry():
    """The `dessam` command's main function, in this layout (`dessam.commands`) or an earlier one (`dessam.cli`)."""
    try:
        from dessam.commands import main
    except ImportError:
        from dessam.cli import main
    return main


def layer(module: str) -> int:
    """The layer of `dessam.X` (X relative to the package)."""
    name = module[len("dessam."):] if module.startswith("dessam.") else ""
    name = EARLIER.get(name, name)
    best, length = len(LAYERS) - 1, -1
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if (name == member or (member and name.startswith(member + "."))) and len(member) > length:
                best, length = index, len(member)
    return best


def static_numbers(src: Path) -> dict:
    files = sorted((src / "dessam").rglob("*.py"))
    functions = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                functions.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(src)}:{node.name}"))
    lengths = sorted(n for n, _ in functions)
    return {"modules": len(files), "lines": sum(len(p.read_text().splitlines()) for p in files),
            "functions": len(functions), "median": lengths[len(lengths) // 2],
            "longest": sorted(functions, reverse=True)[:10]}


def trace(argv: list) -> tuple:
    """(dessam modules whose functions ran, climbs as sorted (caller, callee) pairs) of `dessam argv`."""
    main = dessam_entry()

    called, climbs = set(), set()

    def dessam_module(frame):
        while frame is not None:
            name = frame.f_globals.get("__name__", "")
            if name == "dessam" or name.startswith("dessam."):
                return name, frame
            frame = frame.f_back
        return None, None

    def profile(frame, event, arg):
        if event != "call" or not frame.f_code.co_flags & 0x1:  # functions only: not module or class bodies
            return
        if frame.f_code.co_name == "__create_fn__":  # dataclasses building a class at import: not a call of it
            return
        name = frame.f_globals.get("__name__", "")
        if not (name == "dessam" or name.startswith("dessam.")):
            return
        called.add(name)
        caller, _ = dessam_module(frame.f_back)
        if caller and caller != name and layer(caller) < layer(name):
            climbs.add((caller, name))

    sys.setprofile(profile)
    try:
        status = main(argv)
    finally:
        sys.setprofile(None)
    if status:
        raise SystemExit(f"dessam {' '.join(argv)} failed ({status})")
    return called, sorted(climbs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default=str(HERE.parent / "src"))
    parser.add_argument("--model", help="a model.pt to predict with (default: one trained here)")
    parser.add_argument("--data", help="a folder of `dessam synth` output (default: made here)")
    parser.add_argument("--list", action="store_true", help="also name the modules each command enters")
    args = parser.parse_args()
    src = Path(args.src).resolve()
    sys.path.insert(0, str(src))
    os.environ.setdefault("TQDM_DISABLE", "1")
    home = tempfile.TemporaryDirectory()
    os.environ["DESSAM_HOME"] = home.name  # an empty cache, so that every run counts the same
    import torch

    torch.set_num_threads(1)
    import dessam

    assert Path(dessam.__file__).resolve().parent == src / "dessam", dessam.__file__
    numbers = static_numbers(src)
    print(f"{src}: {numbers['modules']} modules, {numbers['lines']} lines, {numbers['functions']} functions "
          f"(median {numbers['median']} lines)")
    print("longest functions:")
    for length, name in numbers["longest"]:
        print(f"  {length:4d}  {name}")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        data = Path(args.data) if args.data else work / "synth"
        if not args.data:
            dessam_entry()(["synth", "--out", str(data), "--n-train", "4", "--n-val", "0", "--n-test", "2", "--seed", "3"])
        train = ["train", "--train", str(data / "train.json"), "--images", str(data / "images"), "--preset", "tiny",
                 "--sam", "tiny", "--max-iters", "2", "--out", str(work / "run"), "--quiet"]
        image = sorted((data / "images").glob("*.png"))[0]
        for name, argv in (("train", train), ("predict", None)):
            if argv is None:
                model = args.model or str(work / "run" / "model.pt")
                predict = ["predict", str(image), "--model", model, "--quiet"]
                # once before, in a process of its own: a first run may export the model's graphs
                # into the cache (the ONNX engine's first use); the count is of a run after it
                subprocess.run([sys.executable, "-m", "dessam", *predict, "--out", str(work / "warm")],
                               check=True, env=dict(os.environ, PYTHONPATH=str(src)))
                argv = predict + ["--out", str(work / "pred")]
            called, climbs = trace(argv)
            print(f"dessam {name}: {len(called)} modules, {len(climbs)} climbs back up")
            if args.list:
                print("  entered: " + ", ".join(sorted(called)))
            for caller, callee in climbs:
                print(f"  {caller} ({LAYERS[layer(caller)][0]}) -> {callee} ({LAYERS[layer(callee)][0]})")


if __name__ == "__main__":
    main()
