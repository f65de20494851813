"""Files from elsewhere are data, never code: checkpoints load weights-only, cache entries are verified."""

import ast
import hashlib
import io
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scenes import tiny_config, write_box_dataset

import dessam
from dessam.commands import main
from dessam.training.cache import EmbeddingCache
from dessam.models.sam import build_sam

SOURCE = Path(dessam.__file__).parent


class RunsCommand:
    """Unpickling this runs a shell command (what a hostile checkpoint would do)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            yield (owner.id if isinstance(owner, ast.Name) else ast.unparse(owner)), node.func.attr, node


def test_every_load_in_the_source_tree_refuses_code():
    """torch.load always weights_only=True; no pickle.load(s); np.load never allows pickles."""
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 10
    torch_loads, problems = 0, []
    for path in files:
        for owner, name, call in _calls(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(SOURCE)}:{call.lineno}"
            keywords = {k.arg: k.value for k in call.keywords}
            if owner == "torch" and name == "load":
                torch_loads += 1
                value = keywords.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if owner == "pickle" and name in ("load", "loads", "Unpickler"):
                problems.append(f"{where}: pickle.{name}")
            if owner in ("np", "numpy") and name == "load":
                value = keywords.get("allow_pickle")
                if value is not None and not (isinstance(value, ast.Constant) and value.value is False):
                    problems.append(f"{where}: np.load with allow_pickle")
            if name == "load" and owner in ("torch.jit", "jit"):
                problems.append(f"{where}: torch.jit.load")
    assert torch_loads >= 1  # the check looks at real calls
    assert problems == []


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A box dataset, a tiny config and crafted files whose unpickling would create `marker`."""
    root = tmp_path_factory.mktemp("untrusted")
    boxes_json, images = write_box_dataset(root, n_images=2)
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(epochs=1, max_iters=1).to_dict()))
    marker = root / "command_ran"
    payload = {"format": "dessam-model", "state_dict": {}, "x": RunsCommand(f"touch {marker}")}
    zip_file = root / "crafted.pt"
    torch.save(payload, zip_file)
    files = {"torch.save": zip_file}
    for protocol in (2, 5):  # 2: torch's legacy format; 5: a plain modern pickle
        files[f"pickle protocol {protocol}"] = root / f"crafted_p{protocol}.pt"
        files[f"pickle protocol {protocol}"].write_bytes(pickle.dumps(payload, protocol=protocol))
    return root, boxes_json, images, config, marker, files


def test_the_crafted_file_is_really_hostile(hostile, tmp_path):
    """Guard for the tests below: loading it the unsafe way does run the command."""
    root, *_ = hostile
    witness = tmp_path / "witness"
    torch.save({"x": RunsCommand(f"touch {witness}")}, tmp_path / "live.pt")
    torch.load(tmp_path / "live.pt", weights_only=False)
    assert witness.is_file()


def _as_model(root, boxes_json, images, config, crafted, out):
    return ["predict", "--model", str(crafted), str(images / "scene_000.png"), "--out", str(out), "--device", "cpu",
            "--quiet"]


def _as_sam_checkpoint(root, boxes_json, images, config, crafted, out):
    return ["train", "--train", str(boxes_json), "--images", str(images), "--sam", "tiny", "--sam-checkpoint",
            str(crafted), "--config", str(config), "--out", str(out), "--quiet"]


def _as_resume_checkpoint(root, boxes_json, images, config, crafted, out):
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.pt").write_bytes(crafted.read_bytes())
    return ["train", "--train", str(boxes_json), "--images", str(images), "--sam", "tiny", "--config", str(config),
            "--out", str(out), "--quiet", "--resume"]


# what the one error line says: the forbidden call by name, or (protocol 5) that the file is not a checkpoint
EXPECTED = {"torch.save": "refused to load", "pickle protocol 2": "refused to load",
            "pickle protocol 5": "not a readable PyTorch checkpoint"}


@pytest.mark.parametrize("kind", list(EXPECTED))
@pytest.mark.parametrize("role", [_as_model, _as_sam_checkpoint, _as_resume_checkpoint],
                         ids=["--model", "--sam-checkpoint", "resume last.pt"])
def test_crafted_checkpoint_is_refused_and_runs_nothing(hostile, role, kind, tmp_path, capsys):
    root, boxes_json, images, config, marker, files = hostile
    argv = role(root, boxes_json, images, config, files[kind], tmp_path / "out")
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert not marker.exists()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dessam: error: ")
    assert EXPECTED[kind] in lines[0]
    assert "posix.system" in lines[0] or kind == "pickle protocol 5"
    assert not (tmp_path / "out" / "model.pt").exists()


# ----- embedding cache ---------------------------------------------------------------------
SHAPE = (4, 3, 3)


def _npy(array: np.ndarray, allow_pickle=False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _forged_header(shape: tuple) -> bytes:
    """A valid float16 .npy header that claims `shape`, followed by a few bytes of data."""
    header = _npy(np.zeros(SHAPE, np.float16))
    text = header[10:10 + int.from_bytes(header[8:10], "little")].decode("latin1")
    forged = text.replace(str(SHAPE), str(shape)).rstrip().ljust(len(text) - 1) + "\n"
    assert len(forged) == len(text)
    return header[:10] + forged.encode("latin1") + b"\0" * 16


def _tampered(marker: Path) -> dict:
    good = np.ones(SHAPE, np.float16)
    return {
        "pickled object array": _npy(np.array([RunsCommand(f"touch {marker}")], dtype=object), allow_pickle=True),
        "wrong shape": _npy(np.ones((3, 4, 3), np.float16)),
        "float32": _npy(good.astype(np.float32)),
        "not-a-number values": _npy(np.full(SHAPE, np.nan, np.float16)),
        "header claiming 2**40 values": _forged_header((2**40,)),
        "header claiming another shape": _forged_header((3, 4, 3)),
        "not an .npy file": b"\x93NUMPY garbage",
        "Fortran order": _npy(np.asfortranarray(good)),
    }


@pytest.mark.parametrize("case", list(_tampered(Path("x"))))
def test_tampered_cache_entry_with_a_matching_digest_is_recomputed(case, tmp_path):
    marker = tmp_path / "command_ran"
    cache = EmbeddingCache(tmp_path / "cache", encoder_key="k")
    key = cache.key(np.zeros((2, 2, 3), np.uint8))
    cache.store(key, torch.zeros(SHAPE))
    data_path, digest_path = cache._paths(key)
    forged = _tampered(marker)[case]
    data_path.write_bytes(forged)
    digest_path.write_text(hashlib.sha256(forged).hexdigest())  # whoever edited the entry also fixed its digest
    fresh = torch.full(SHAPE, 2.0)
    result = cache.get_or_compute(key, lambda: fresh, SHAPE)
    assert torch.equal(result.float(), fresh)
    assert (cache.rejected, cache.misses, cache.hits) == (1, 1, 0)
    assert not marker.exists()
    assert torch.equal(cache.load(key, SHAPE).float(), fresh)  # the entry was rewritten good


@pytest.mark.parametrize("damage", ["flipped byte", "digest removed", "digest garbage"])
def test_damaged_cache_entry_is_recomputed(damage, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache", encoder_key="k")
    key = cache.key(np.zeros((2, 2, 3), np.uint8))
    cache.store(key, torch.zeros(SHAPE))
    data_path, digest_path = cache._paths(key)
    if damage == "flipped byte":
        data = bytearray(data_path.read_bytes())
        data[-1] ^= 0x55
        data_path.write_bytes(bytes(data))
    elif damage == "digest removed":
        digest_path.unlink()
    else:
        digest_path.write_bytes(b"\xff\xfe\x00")
    result = cache.get_or_compute(key, lambda: torch.ones(SHAPE), SHAPE)
    assert torch.equal(result.float(), torch.ones(SHAPE))
    assert cache.misses == 1 and cache.hits == 0


def test_training_recomputes_a_forged_cache_entry(tmp_path):
    """A forged entry (matching digest) in a shared cache is recomputed by training, not used."""
    from dessam.training.train import train

    boxes_json, images = write_box_dataset(tmp_path, n_images=2)
    config = tiny_config(epochs=1)
    config = config.replace({"train.cache_dir": str(tmp_path / "cache")})
    assert train(config, boxes_json, images, tmp_path / "run1", progress=False).encoder_runs == 2
    entry = sorted((tmp_path / "cache").rglob("*.npy"))[0]
    good = np.load(entry)
    marker = tmp_path / "command_ran"
    forged = _npy(np.array([RunsCommand(f"touch {marker}")], dtype=object), allow_pickle=True)
    entry.write_bytes(forged)
    entry.with_suffix(".sha256").write_text(hashlib.sha256(forged).hexdigest())
    result = train(config, boxes_json, images, tmp_path / "run2", progress=False)
    assert result.encoder_runs == 1
    assert not marker.exists()
    assert np.array_equal(np.load(entry), good)


def test_sam_checkpoint_of_the_wrong_variant_is_refused_before_the_model_is_allocated(tmp_path, monkeypatch):
    """A ViT-H-sized allocation must not happen just to say the file is something else."""
    from dessam.errors import DessamError
    from dessam.models import sam as sam_module

    path = tmp_path / "tiny.pth"
    torch.save(build_sam("tiny").state_dict(), path)
    built = []
    real = sam_module.build_sam_architecture

    def spy(name, image_size=None):
        module = real(name, image_size)
        built.append(next(module.parameters()).device.type)
        return module

    monkeypatch.setattr(sam_module, "build_sam_architecture", spy)
    with pytest.raises(DessamError, match="looks like tiny"):
        sam_module.build_sam("vit_h", path)
    assert built == ["meta"]
