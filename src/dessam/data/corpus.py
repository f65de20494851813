"""A corpus for pre-training: several nucleus datasets described in one YAML manifest.

    # corpus.yaml (paths relative to this file)
    datasets:
      - name: dsb2018
        format: dsb                      # dsb | aperio-xml | coco | labels | npy | synthetic
        path: data/dsb2018/stage1_train
        licence: CC0-1.0
        weight: 1.0                      # share of the training draws (relative to the others)
        stain: fluorescence, brightfield and H&E
        source: https://bbbc.broadinstitute.org/BBBC038
      - name: monuseg
        format: aperio-xml
        path: data/monuseg/MoNuSegTrainData/annotations
        images: data/monuseg/MoNuSegTrainData/tissue_image
        licence: CC-BY-NC-SA-4.0
        pixel_size_um: 0.25
      - name: synthetic-pap
        format: synthetic
        generator: pap                   # pap (dessam's Pap smear fields) | pap-negatives (the same with hard
                                         # negatives: stacked squames, folds, debris, leukocytes) | anything (shapes)
        licence: Apache-2.0
        use: [teacher, model]            # the default: the teacher learns its masks, the model its boxes

Every dataset is read into (image, instance map) samples (`Sample`); a stable share of each one's
images (`val_fraction`, chosen by a hash of the image name, so it never changes between runs) is
held out for validation. Synthetic datasets draw new scenes from a seed instead; their held-out
scenes come from a stream training never draws from.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Optional

import numpy as np
from tqdm.auto import tqdm

from ..errors import DessamError
from ..licences import is_non_commercial
from ..yaml_file import read_yaml

FORMATS = ("dsb", "aperio-xml", "coco", "labels", "npy", "synthetic")
GENERATORS = ("pap", "anything", "pap-negatives")  # the order seeds each one's held-out scenes: append only
USES = ("teacher", "model")  # pretrain-teacher learns masks from a dataset, pretrain-model learns to detect its nuclei
SYNTHETIC_SIZE = 256
SYNTHETIC_VAL_STREAM = 9_217_331  # held-out synthetic scenes: a seed stream that training never uses


@dataclass
class DatasetSpec:
    name: str
    format: str
    licence: str
    path: Optional[str] = None            # annotations: a folder or file (not for synthetic)
    images: Optional[str] = None          # images folder (aperio-xml, coco, labels)
    weight: float = 1.0
    pixel_size_um: Optional[float] = None
    stain: str = ""
    source: str = ""                      # where to get it
    generator: Optional[str] = None       # synthetic only
    val_fraction: float = 0.1
    val_images: Optional[int] = None      # synthetic: held-out scenes (default 20)
    use: tuple = USES                     # what it trains: the teacher (masks), the model (boxes), or both

    def __post_init__(self):
        where = f"dataset '{self.name}'"
        if self.format not in FORMATS:
            raise DessamError(f"{where}: unknown format '{self.format}'; use one of {', '.join(FORMATS)}")
        if self.format == "synthetic":
            if self.generator not in GENERATORS:
                raise DessamError(f"{where}: a synthetic dataset needs generator: {' or '.join(GENERATORS)}")
        elif not self.path:
            raise DessamError(f"{where}: give its path (the annotations folder or file)")
        if self.format in ("aperio-xml", "coco", "labels", "npy") and not self.images:
            raise DessamError(f"{where}: format {self.format} needs images: FOLDER")
        if not float(self.weight) > 0:
            raise DessamError(f"{where}: weight {self.weight}: give a positive share")
        if not 0 <= float(self.val_fraction) < 1:
            raise DessamError(f"{where}: val_fraction {self.val_fraction}: give a share from 0 to below 1")
        if self.pixel_size_um is not None and not float(self.pixel_size_um) > 0:
            raise DessamError(f"{where}: pixel_size_um {self.pixel_size_um}: give microns per pixel, a positive number")
        self.use = tuple(self.use) if isinstance(self.use, (list, tuple)) else (self.use,)
        if not self.use or set(self.use) - set(USES):
            raise DessamError(f"{where}: use {list(self.use)}: give teacher, model or both")
        if not str(self.licence).strip():
            raise DessamError(f"{where}: name its licence (e.g. CC0-1.0), which the model card carries")

    @property
    def non_commercial(self) -> bool:
        return is_non_commercial(self.licence)


@dataclass
class Corpus:
    path: Path
    datasets: list

    @property
    def licences(self) -> list:
        return sorted({d.licence for d in self.datasets})

    @property
    def non_commercial(self) -> bool:
        return any(d.non_commercial for d in self.datasets)


@dataclass
class Sample:
    name: str
    image: np.ndarray    # H x W x 3 uint8
    labels: np.ndarray   # H x W uint32, 0 = background

    @property
    def nuclei(self) -> int:
        return int(len(np.unique(self.labels)) - 1)


@dataclass
class LoadedDataset:
    spec: DatasetSpec
    train: list = field(default_factory=list)   # samples (empty for synthetic)
    val: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def synthetic(self) -> bool:
        return self.spec.format == "synthetic"

    def counts(self) -> dict:
        """Images and nuclei of each split (synthetic: the held-out scenes only)."""
        return {"train_images": len(self.train), "train_nuclei": sum(s.nuclei for s in self.train),
                "val_images": len(self.val), "val_nuclei": sum(s.nuclei for s in self.val)}


def read_manifest(path: str | Path) -> Corpus:
    """The corpus manifest at `path`; relative paths in it are relative to its folder."""
    path = Path(path)
    data = read_yaml(path, "corpus manifest")
    if not isinstance(data, dict) or not isinstance(data.get("datasets"), list) or not data["datasets"]:
        raise DessamError(f"{path}: expected a mapping with a non-empty 'datasets' list")
    known = {f.name for f in fields(DatasetSpec)}
    specs, names = [], set()
    for index, entry in enumerate(data["datasets"]):
        if not isinstance(entry, dict) or "name" not in entry:
            raise DessamError(f"{path}: dataset {index + 1} must be a mapping with a name")
        unknown = sorted(set(entry) - known)
        if unknown:
            raise DessamError(f"{path}: dataset '{entry['name']}' has unknown keys {unknown}; known: {', '.join(sorted(known))}")
        for key in ("name", "format", "licence"):
            if key not in entry:
                raise DessamError(f"{path}: dataset '{entry.get('name')}' lacks '{key}'")
        entry = dict(entry)
        for key in ("path", "images"):
            if entry.get(key):
                entry[key] = str((path.parent / str(entry[key])).resolve())
        spec = DatasetSpec(**entry)
        if spec.name in names:
            raise DessamError(f"{path}: two datasets are named '{spec.name}'; names must be unique")
        names.add(spec.name)
        specs.append(spec)
    return Corpus(path, specs)


def is_held_out(name: str, fraction: float) -> bool:
    """Whether the image `name` belongs to the validation share: a stable hash, not a random draw."""
    digest = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < fraction


def load_dataset(spec: DatasetSpec, progress: bool = False) -> LoadedDataset:
    """Read one dataset of the corpus into train and validation samples."""
    if spec.format == "synthetic":
        count = spec.val_images if spec.val_images is not None else 20
        rng_of = (lambda i: np.random.default_rng([SYNTHETIC_VAL_STREAM, GENERATORS.index(spec.generator), i]))
        return LoadedDataset(spec, [], [synthetic_scene(spec.generator, rng_of(i)) for i in range(count)])
    loaded = LoadedDataset(spec)
    for sample in tqdm(read_samples(spec, loaded.notes), desc=f"reading {spec.name}", unit="img",
                       disable=not progress, leave=False):
        (loaded.val if is_held_out(sample.name, spec.val_fraction) else loaded.train).append(sample)
    if not loaded.train:
        raise DessamError(f"{spec.path}: dataset '{spec.name}' has no training images; check its path and format")
    return loaded


def synthetic_scene(generator: str, rng: np.random.Generator) -> Sample:
    """One synthetic field: a Pap smear scene of a random kind and stain, or a generic-shapes scene."""
    if generator in ("pap", "pap-negatives"):
        from .synth import make_scene

        kind = ("patch", "cluster", "mixed")[int(rng.integers(3))]
        image, labels = make_scene(rng, scene=kind, size=(SYNTHETIC_SIZE, SYNTHETIC_SIZE), shift=bool(rng.random() < 0.3),
                                   hard_negatives=generator == "pap-negatives")
    else:
        from .anything import make_anything_scene

        image, labels = make_anything_scene(rng, SYNTHETIC_SIZE)
    return Sample(generator, np.ascontiguousarray(image[..., :3]), labels.astype(np.uint32))


def read_samples(spec: DatasetSpec, notes: list):
    """Every (image, instance map) sample of a non-synthetic dataset, in file order; files left out are
    noted in `notes`."""
    from .images import read_image

    if spec.format == "dsb":
        from .dsb_folders import iter_dsb

        for item, labels in iter_dsb(spec.path):
            yield Sample(item.folder.name, read_image(item.image), labels)
    elif spec.format == "aperio-xml":
        from .aperio_xml import rasterise, read_aperio_xml
        from .converted import index_images, source_files

        index = index_images(Path(spec.images))
        for xml in source_files(Path(spec.path), (".xml",)):
            if xml.stem not in index:
                notes.append(f"{xml.name}: no image named {xml.stem} in {spec.images}, left out")
                continue
            image = read_image(index[xml.stem])
            yield Sample(xml.stem, image, rasterise(read_aperio_xml(xml).polygons, *image.shape[:2]))
    elif spec.format == "coco":
        from .coco import load_coco, read_record_image, record_label_map

        for record in load_coco(spec.path, spec.images).images:
            yield Sample(record.file_name, read_record_image(record), record_label_map(record).astype(np.uint32))
    else:  # labels or npy: instance-label images or arrays beside images of the same stem
        from .convert_maps import read_npy_labels
        from .converted import as_label_map, index_images, source_files
        from .images import read_image_raw

        suffixes, read = ((".npy",), read_npy_labels) if spec.format == "npy" else ((".png", ".tif", ".tiff"), read_image_raw)
        index = index_images(Path(spec.images))
        for path in source_files(Path(spec.path), suffixes):
            if path.stem not in index:
                notes.append(f"{path.name}: no image named {path.stem} in {spec.images}, left out")
                continue
            yield Sample(path.stem, read_image(index[path.stem]), as_label_map(read(path), path).astype(np.uint32))
