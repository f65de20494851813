"""The pre-training corpus: its manifest, its datasets' splits, and the licence its weights carry."""

import numpy as np
import pytest
import yaml
from public_layouts import write_aperio, write_dsb

from dessam.data.corpus import is_held_out, load_dataset, read_manifest
from dessam.errors import DessamError
from dessam.licences import from_data
from dessam.training.model_card import licence_text


def _weights_licence(corpus) -> str:
    return licence_text(from_data({d.name: d.licence for d in corpus.datasets}, "these weights"))


def _manifest(tmp_path, datasets):
    path = tmp_path / "corpus.yaml"
    path.write_text(yaml.safe_dump({"datasets": datasets}))
    return path


def test_manifest_paths_are_relative_to_it_and_datasets_load(tmp_path):
    write_dsb(tmp_path / "dsb", count=12)
    write_aperio(tmp_path / "xml")
    path = _manifest(tmp_path, [
        {"name": "dsb", "format": "dsb", "path": "dsb", "licence": "CC0-1.0", "val_fraction": 0.3},
        {"name": "xml", "format": "aperio-xml", "path": "xml/annotations", "images": "xml/images",
         "licence": "CC-BY-NC-SA-4.0", "pixel_size_um": 0.25, "val_fraction": 0},
        {"name": "pap", "format": "synthetic", "generator": "pap", "licence": "Apache-2.0", "val_images": 2},
    ])
    corpus = read_manifest(path)
    assert corpus.datasets[0].path == str((tmp_path / "dsb").resolve())
    dsb, xml, pap = (load_dataset(spec) for spec in corpus.datasets)
    assert len(dsb.train) + len(dsb.val) == 12 and 0 < len(dsb.val) < 12
    assert [s.name for s in dsb.val] == [f"img{i:02d}" for i in range(12) if is_held_out(f"img{i:02d}", 0.3)]
    assert dsb.counts()["train_nuclei"] == sum(s.nuclei for s in dsb.train)
    assert xml.train[0].nuclei == 2 and not xml.val
    assert xml.train[0].image.shape == (40, 50, 3) and xml.train[0].labels.dtype == np.uint32
    again = load_dataset(corpus.datasets[2])
    assert len(pap.val) == 2 and all(np.array_equal(a.image, b.image) for a, b in zip(pap.val, again.val))
    assert corpus.non_commercial and "CC-BY-NC-SA-4.0" in _weights_licence(corpus)


def test_held_out_images_do_not_change_between_runs_or_with_the_others():
    names = [f"image_{i}" for i in range(400)]
    held = [n for n in names if is_held_out(n, 0.1)]
    assert 20 < len(held) < 60
    assert held == [n for n in names[::-1] if is_held_out(n, 0.1)][::-1]  # order plays no part


def test_weights_are_permissive_only_without_non_commercial_data(tmp_path):
    write_dsb(tmp_path / "dsb", count=2)
    corpus = read_manifest(_manifest(tmp_path, [
        {"name": "dsb", "format": "dsb", "path": "dsb", "licence": "CC0-1.0"},
        {"name": "pap", "format": "synthetic", "generator": "pap", "licence": "Apache-2.0"}]))
    assert not corpus.non_commercial
    assert _weights_licence(corpus).startswith("Apache-2.0")


@pytest.mark.parametrize("entry, message", [
    ({"name": "a", "format": "zarr", "path": "x", "licence": "CC0-1.0"}, "unknown format 'zarr'"),
    ({"name": "a", "format": "dsb", "path": "x"}, "lacks 'licence'"),
    ({"name": "a", "format": "dsb", "licence": "CC0-1.0"}, "give its path"),
    ({"name": "a", "format": "synthetic", "licence": "CC0-1.0"}, "needs generator"),
    ({"name": "a", "format": "aperio-xml", "path": "x", "licence": "CC0-1.0"}, "needs images"),
    ({"name": "a", "format": "dsb", "path": "x", "licence": "CC0-1.0", "weight": 0}, "positive share"),
    ({"name": "a", "format": "dsb", "path": "x", "licence": "CC0-1.0", "colour": "red"}, "unknown keys"),
])
def test_manifest_mistakes_are_one_line(tmp_path, entry, message):
    with pytest.raises(DessamError, match=message):
        read_manifest(_manifest(tmp_path, [entry]))


def test_two_datasets_of_one_name_and_a_missing_file(tmp_path):
    entry = {"name": "a", "format": "synthetic", "generator": "pap", "licence": "CC0-1.0"}
    with pytest.raises(DessamError, match="two datasets are named 'a'"):
        read_manifest(_manifest(tmp_path, [entry, entry]))
    with pytest.raises(DessamError, match="corpus manifest not found"):
        read_manifest(tmp_path / "nope.yaml")


def test_a_dataset_without_training_images_is_refused(tmp_path):
    write_dsb(tmp_path / "dsb", count=1)
    corpus = read_manifest(_manifest(tmp_path, [{"name": "d", "format": "dsb", "path": "dsb", "licence": "CC0-1.0",
                                                 "val_fraction": 0.999}]))
    with pytest.raises(DessamError, match="no training images"):
        load_dataset(corpus.datasets[0])
