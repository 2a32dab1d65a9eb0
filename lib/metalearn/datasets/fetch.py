"""Obtain, verify and prepare the study's data sets.

Every file is fetched from its official URL, or from a local mirror when ``DATA_MIRROR`` is set
(a folder, or an ``http(s)://`` / ``file://`` URL whose layout is ``<mirror>/<dataset>/<file>``).
A download is accepted only if its checksum matches the official one or the mirror's
(the mirror repackaged some archives, so both are listed), and the prepared arrays are checked
for content (counts, shapes) before they are written. Every write is atomic: a temporary file in
the destination folder, then ``os.replace``; an interrupted run leaves no half file.

Prepared, compact forms (under ``<data_dir>/prepared/``):

* ``omniglot.npz``  ``images`` uint8 ``[1623 characters, 20 drawers, 28, 28]`` (ink = 255),
  ``characters`` (``"Alphabet/characterNN"``), and the Vinyals split lists.
* ``cifar_fs.npz``  ``{train,val,test}_images`` uint8 ``[classes, 600, 32, 32, 3]`` and class names.
* ``molecules/``    verified MoleculeNet and FS-Mol tables (CSV), loaded with :func:`load_molecules`.

Command line (used by the DVC ``data`` stage)::

    python -m metalearn.datasets.fetch prepare [omniglot cifar_fs molecules] [--manifest data/manifest.json]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import numpy as np

from metalearn.core import cli
from metalearn.core.cli import UsageError
from metalearn.core.files import atomic_dir, atomic_path, file_hashes

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from metalearn.core.episodes import ClassDataset

MIRROR_ENV = "DATA_MIRROR"
DATA_DIR_ENV = "METALEARN_DATA_DIR"
DATASETS = ("omniglot", "cifar_fs", "molecules")


class DataError(RuntimeError):
    """Base class of the data errors; the message says what is wrong and how to fix it."""


class DataUnavailableError(DataError):
    """A file could not be obtained (offline, missing from the mirror, HTTP error)."""


class ChecksumError(DataError):
    """A downloaded file matches neither its official nor its mirror checksum."""


class ContentError(DataError):
    """A file has the right checksum but the wrong content (counts, shapes)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a data set: where it lives in the mirror, its official URL, and its checksums.

    ``path`` is relative to the mirror root and to ``<data_dir>/raw``. ``sha256`` is the mirror's
    checksum; ``md5`` the official archive's where it is published (``None`` where unknown).
    """

    path: str
    url: str
    sha256: str
    md5: str | None = None


PROJECT_ROOT = Path(__file__).resolve().parents[3]


def default_data_dir() -> Path:
    """``$METALEARN_DATA_DIR`` or the project's ``data/`` folder."""
    if os.environ.get(DATA_DIR_ENV):
        return Path(os.environ[DATA_DIR_ENV])
    return PROJECT_ROOT / "data"


def default_mirror() -> str | None:
    """``$DATA_MIRROR``: a URL, or a folder (a relative path is taken from the project root, so notebooks
    running in ``notebooks/`` find the same mirror as commands run from the root). ``None`` if unset."""
    mirror = os.environ.get(MIRROR_ENV) or None
    if mirror and "://" not in mirror and not Path(mirror).is_absolute():
        mirror = str((PROJECT_ROOT / mirror).resolve())
    return mirror


def check_mirror() -> None:
    """A :class:`~metalearn.core.cli.UsageError` if ``$DATA_MIRROR`` names a folder that does not exist (before a
    notebook starts, not inside it)."""
    mirror = default_mirror()
    if mirror and "://" not in mirror and not Path(mirror).is_dir():
        raise UsageError(f"DATA_MIRROR={os.environ.get(MIRROR_ENV)} is not a folder ({mirror}); set it to a folder or "
                         "URL with the mirror's layout, or unset it to download from the official URLs")


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------
_OMNIGLOT_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
_VINYALS_URL = (
    "https://raw.githubusercontent.com/jakesnell/prototypical-networks/"
    "c9bb4d258267c11cb6e23f0a19242d24ca98ad8a/data/omniglot/splits/vinyals/"
)
_TORCHMETA_ASSETS = (
    "https://raw.githubusercontent.com/tristandeleu/pytorch-meta/"
    "d55d89ebd47f340180267106bde3e4b723f23762/torchmeta/datasets/assets/cifar100/cifar-fs/"
)
_DEEPCHEM_URL = "https://deepchemdata.s3-us-west-1.amazonaws.com/datasets/"

OMNIGLOT_FILES = (
    RemoteFile("omniglot/images_background.zip", _OMNIGLOT_URL + "images_background.zip",
               "5e40902b4b72dcec6d87732eb8e8c0862f2c92b579cf264e65fc7a0954e80d47",
               "68d2efa1b9178cc56df9314c21c6e718"),
    RemoteFile("omniglot/images_evaluation.zip", _OMNIGLOT_URL + "images_evaluation.zip",
               "bcc0b44a73cc146a6739d98c0004e3fc70173968e567278fb429b3dd55342400",
               "6b91aef0f799c5bb55b94e3f2daec811"),
    RemoteFile("omniglot/splits/vinyals/train.txt", _VINYALS_URL + "train.txt",
               "984522c194c30fb678ce53304a160a42faf5403ad4f9a67010f32dd3a35738e0"),
    RemoteFile("omniglot/splits/vinyals/val.txt", _VINYALS_URL + "val.txt",
               "11f99e54faee3e26f53d3231c1cceac5bf7b8730e9be31cb6dab256551dc0c1a"),
    RemoteFile("omniglot/splits/vinyals/test.txt", _VINYALS_URL + "test.txt",
               "845264cc5c156180828ccf17915668b17ee21424d0170df6e7d81676aa5d1204"),
)

_CIFAR_FS_SPLITS = tuple(
    RemoteFile(f"cifar_fs/splits/torchmeta/cifar-fs/{split}.json", _TORCHMETA_ASSETS + f"{split}.json", sha)
    for split, sha in (
        ("train", "e0feef3aef13fc7320d5deef5ae77d91edd28041d9a173939ec48cea68135ef0"),
        ("val", "d9d6e267b5dad5c2267ff7dd98ebb18bb016f7929b56839422bb34fb53bcb3ef"),
        ("test", "e199c74ef4f014ea3f74da1b6cf74795d32747183426c2a7e6ee4308d3bf47e3"),
    )
)
# The mirror holds CIFAR-FS rebuilt as arrays; the official source is the CIFAR-100 python tarball.
CIFAR_FS_MIRROR_FILES = (
    RemoteFile("cifar_fs/train_part0.npz", "", "598f997a1d0ae70dfc8b958558d237e535bb40224198253c67ed1159f4f158fe"),
    RemoteFile("cifar_fs/train_part1.npz", "", "21ddd59279d00c02eb4550aad8b9c7d74b1dbcf2f8fcadc3aaca3f58a59fa478"),
    RemoteFile("cifar_fs/val.npz", "", "1fe3a5e821627ce8b455cbdb215bae79db1956f23a5827400c57b1e9d472ba20"),
    RemoteFile("cifar_fs/test.npz", "", "5b2b77a4aec4524fae8df7ae33432da10d04779254687425cee6fc7e35eab9b0"),
) + _CIFAR_FS_SPLITS
CIFAR_FS_OFFICIAL_FILES = (
    RemoteFile("cifar_fs/cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
               "", "eb9058c3a382ffc7106e4002c42a8d85"),
) + _CIFAR_FS_SPLITS
# SHA-256 of the raw pixel bytes of each CIFAR-FS split in the mirror's image order (PROVENANCE.md).
_CIFAR_FS_PIXEL_SHA256 = {
    "train": "3b5302d5b3a9d49e22e85e5980f6d1bdde5a25a9519cd6587b2b6a52d880e82c",
    "val": "dc9138ad4a9166438d022b10f3548280ae7382751d07010afea451f3247bb7f0",
    "test": "b2120bd08d0b41ceb7c294019f713a98b5d68ee106ac708cafcbf4220a8b704c",
}

# MoleculeNet: (mirror file, official file name, mirror sha256, molecules, tasks).
_MOLECULENET = {
    "tox21": ("tox21.csv", "tox21.csv.gz", "7d7e7facd853a63e79ddce4e9c3fcb7a0d83a1c300b603031c0f2c64fbe77761", 7831, 12),
    "sider": ("sider.csv", "sider.csv.gz", "71efc6ac4ca82d6545bc512509863281be0f17234afd7adaf71a71899988302e", 1427, 27),
    "muv": ("muv.csv.gz", "muv.csv.gz", "ee68d1fad0b10440dc494ac3a74cf99168a0b0da9683556b2b48220b88172135", 93087, 17),
    "toxcast": ("toxcast.csv.gz", "toxcast_data.csv.gz",
                "4b9b4366b02ce7ec7a0831d60f8c46f153c53c5e122376df887476240496abd4", 8576, 617),
}
_FSMOL_MIRROR = {
    "fsmol_train_part1.csv.gz": "94c3a435278d1c78e3ed27117cd03e1ecfce910b80cfb2ebf15237cb77bcd919",
    "fsmol_train_part2.csv.gz": "c75e6c055ac202422bb359da5a7af1f9d803aceee49a2edbe9cbb6fe2379527b",
    "fsmol_valid.csv.gz": "b11b245d8ac08501d75ffa89b3c112ecdafa22d722b8e84be760e9270ce89b8d",
    "fsmol_test.csv.gz": "9951e333041917ed3a7ae72256f8d4c773e45d161be068b6313137d2ca932ea5",
}
_FSMOL_TASK_LIST = RemoteFile(
    "molecules/fsmol/fsmol-0.1.json",
    "https://raw.githubusercontent.com/microsoft/FS-Mol/92aa95daba3f43863227e65be85a07b4a2ee754f/datasets/fsmol-0.1.json",
    "f8d0e4d6031d47c82c7aef34c33b554c13648e5cb5c3fb7050070f4e79b23cf8",
)
_FEWSHOT_SPLITS = RemoteFile("molecules/fewshot_task_splits.json", "",
                             "412783ee45981050233d50130153318ef7189f6af9afae42f37ad1b8ab4289ca")
MOLECULES_MIRROR_FILES = tuple(
    RemoteFile(f"molecules/moleculenet/{m[0]}", "", m[2]) for m in _MOLECULENET.values()
) + tuple(RemoteFile(f"molecules/fsmol/{name}", "", sha) for name, sha in _FSMOL_MIRROR.items()) + (
    _FSMOL_TASK_LIST, _FEWSHOT_SPLITS)
# Official sources publish no checksums: these files are verified by content only.
MOLECULES_OFFICIAL_FILES = tuple(
    RemoteFile(f"molecules/moleculenet/{m[1]}", _DEEPCHEM_URL + m[1], "") for m in _MOLECULENET.values()
) + (RemoteFile("molecules/fsmol/fsmol.tar", "https://figshare.com/ndownloader/files/31345321", ""),
     _FSMOL_TASK_LIST)
# The few-shot task splits (first tasks train, last tasks test, in column order) are facts of the
# Meta-MGNN / PAR benchmarks; without a mirror they are rebuilt from these counts.
FEWSHOT_TASK_COUNTS = {"tox21": (9, 3), "sider": (21, 6), "muv": (12, 5), "toxcast": (450, 167)}


def source_files(dataset: str, mirror: str | None) -> tuple[RemoteFile, ...]:
    """The files :func:`prepare` needs for ``dataset``, from the mirror or from the official URLs."""
    table = {
        "omniglot": (OMNIGLOT_FILES, OMNIGLOT_FILES),
        "cifar_fs": (CIFAR_FS_MIRROR_FILES, CIFAR_FS_OFFICIAL_FILES),
        "molecules": (MOLECULES_MIRROR_FILES, MOLECULES_OFFICIAL_FILES),
    }
    if dataset not in table:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    return table[dataset][0] if mirror else table[dataset][1]


# ----------------------------------------------------------------------------------------------
# Fetching and verification
# ----------------------------------------------------------------------------------------------
def _checksum_ok(remote: RemoteFile, sha: str, md5: str) -> bool:
    known = [c for c in (remote.sha256, remote.md5) if c]
    return not known or sha == remote.sha256 or md5 == remote.md5


def _source_url(remote: RemoteFile, mirror: str | None) -> str:
    if mirror is None:
        return remote.url
    if "://" in mirror:
        return mirror.rstrip("/") + "/" + urllib.parse.quote(remote.path)
    return Path(mirror, remote.path).resolve().as_uri()


def fetch(remote: RemoteFile, raw_dir: Path, mirror: str | None = None) -> Path:
    """Download ``remote`` into ``raw_dir`` (skipped if a verified copy is there) and return its path.

    Raises :class:`DataUnavailableError` if it cannot be obtained and :class:`ChecksumError` (leaving
    nothing behind) if its checksum matches neither the official nor the mirror checksum.
    """
    dest = raw_dir / remote.path
    # a file without a published checksum only lands here through a completed download (content is
    # checked when it is prepared); one with a checksum is re-verified
    if dest.exists() and (not (remote.sha256 or remote.md5) or _checksum_ok(remote, *file_hashes(dest))):
        return dest
    url = _source_url(remote, mirror)
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
        except (urllib.error.URLError, OSError) as err:
            where = f"the mirror {mirror!r} ({MIRROR_ENV})" if mirror else "its official URL"
            raise DataUnavailableError(
                f"cannot obtain {remote.path} from {where}: {url} ({err}). "
                f"Offline? Set {MIRROR_ENV} to a folder or URL that mirrors the data "
                f"(e.g. {MIRROR_ENV}=../shared/data), or download {remote.url or url} "
                f"to {dest} yourself."
            ) from err
        sha, md5 = file_hashes(tmp)
        if not _checksum_ok(remote, sha, md5):
            expected = " or ".join(
                x for x in (remote.sha256 and f"sha256 {remote.sha256} (mirror)",
                            remote.md5 and f"md5 {remote.md5} (official)") if x)
            raise ChecksumError(
                f"checksum mismatch for {remote.path} downloaded from {url}: got sha256 {sha}, "
                f"md5 {md5}; expected {expected}. The file is corrupt or a different release; "
                f"nothing was extracted or kept. Re-download it, or fix the mirror ({MIRROR_ENV})."
            )
    return dest


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise ContentError(f"unexpected content: {what}. The download is not the expected data set; "
                           "delete data/raw and data/prepared and prepare again.")


def array_digest(arrays: dict[str, np.ndarray]) -> str:
    """A content hash of named arrays (independent of how the ``.npz`` file was written)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes() if a.dtype.kind != "U" else "\n".join(a.tolist()).encode())
    return h.hexdigest()


def _save_npz(dest: Path, arrays: dict[str, np.ndarray]) -> str:
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        np.savez(f, **cast(dict[str, Any], arrays))  # cast: mypy matches **arrays to allow_pickle too
    return array_digest(arrays)


# ----------------------------------------------------------------------------------------------
# Omniglot
# ----------------------------------------------------------------------------------------------
def _omniglot_from_zips(zips: list[Path], size: int = 28) -> tuple[np.ndarray, list[str]]:
    """All characters of the two Omniglot zips, ``[characters, 20, size, size]``, sorted by name."""
    from PIL import Image

    chars: dict[str, list[tuple[str, bytes]]] = {}
    for zpath in zips:
        with zipfile.ZipFile(zpath) as zf:
            for name in zf.namelist():
                parts = name.split("/")
                if len(parts) == 4 and parts[3].endswith(".png"):
                    chars.setdefault(f"{parts[1]}/{parts[2]}", []).append((parts[3], zf.read(name)))
    _require(len(chars) == 1623, f"Omniglot has {len(chars)} characters, expected 1623")
    names = sorted(chars)
    images = np.empty((len(names), 20, size, size), dtype=np.uint8)
    for i, name in enumerate(names):
        files = sorted(chars[name])
        _require(len(files) == 20, f"character {name} has {len(files)} drawings, expected 20")
        for j, (_, data) in enumerate(files):
            img = Image.open(io.BytesIO(data))
            _require(img.size == (105, 105), f"{name}/{files[j][0]} is {img.size}, expected 105x105")
            small = img.convert("L").resize((size, size), Image.Resampling.LANCZOS)
            images[i, j] = 255 - np.asarray(small)  # ink = 255, background = 0
    return images, names


def prepare_omniglot(data_dir: Path, mirror: str | None) -> dict:
    """Omniglot as ``prepared/omniglot.npz`` (28x28 uint8, ink = 255) plus the Vinyals split lists."""
    raw = data_dir / "raw"
    paths = [fetch(f, raw, mirror) for f in OMNIGLOT_FILES]
    images, names = _omniglot_from_zips(paths[:2])
    arrays: dict[str, np.ndarray] = {"images": images, "characters": np.array(names)}
    known = set(names)
    expected = {"train": 1028, "val": 172, "test": 423}
    for split, path in zip(("train", "val", "test"), paths[2:], strict=True):
        classes = path.read_text().split()
        chars = sorted({c.rsplit("/", 1)[0] for c in classes})
        _require(len(chars) == expected[split] and len(classes) == 4 * expected[split],
                 f"Vinyals {split} split has {len(chars)} characters / {len(classes)} classes")
        _require(set(chars) <= known, f"Vinyals {split} split names characters not in Omniglot")
        arrays[f"{split}_classes"] = np.array(classes)
    digest = _save_npz(data_dir / "prepared" / "omniglot.npz", arrays)
    return {"file": "prepared/omniglot.npz", "content_sha256": digest, "characters": len(names),
            "images": int(images.shape[0] * images.shape[1]), "shape": list(images.shape[2:]),
            "classes": {s: len(arrays[f"{s}_classes"]) for s in expected}}


# ----------------------------------------------------------------------------------------------
# CIFAR-FS
# ----------------------------------------------------------------------------------------------
def _cifar_fs_split_names(paths: list[Path]) -> dict[str, list[str]]:
    return {split: sorted(cls for _, cls in json.loads(p.read_text()))
            for split, p in zip(("train", "val", "test"), paths, strict=True)}


def _cifar_fs_from_mirror(paths: list[Path]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The mirror's arrays per split: ``(images [N, 32, 32, 3], labels [N], class_names [K])``."""
    out = {}
    parts = {"train": paths[:2], "val": [paths[2]], "test": [paths[3]]}
    for split, files in parts.items():
        image_parts, label_parts = [], []
        for path in files:
            with np.load(path) as z:
                image_parts.append(z["images"])
                label_parts.append(z["labels"])
                class_names = z["class_names"]
        images, labels = np.concatenate(image_parts), np.concatenate(label_parts)
        _require(hashlib.sha256(images.tobytes()).hexdigest() == _CIFAR_FS_PIXEL_SHA256[split],
                 f"CIFAR-FS {split} pixels differ from the mirror's published pixel hash")
        out[split] = (images, labels, class_names)
    return out


def _cifar_fs_from_official(tar_path: Path, split_names: dict[str, list[str]]) -> dict:
    """CIFAR-100's python pickles regrouped into the CIFAR-FS splits, as :func:`_cifar_fs_from_mirror`.

    Within a class, images keep CIFAR-100's order (train, then test), which differs from the mirror's:
    both routes give the same images per class, so the same episodes in distribution, not bit for bit."""
    with tarfile.open(tar_path) as tf:
        def load(member: str) -> dict:
            f = tf.extractfile(f"cifar-100-python/{member}")
            _require(f is not None, f"cifar-100-python/{member} missing from the tarball")
            assert f is not None
            return pickle.load(f, encoding="latin1")

        meta, train, test = load("meta"), load("train"), load("test")
    names = meta["fine_label_names"]
    data = np.concatenate([train["data"], test["data"]]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    fine = np.concatenate([train["fine_labels"], test["fine_labels"]])
    out = {}
    for split, classes in split_names.items():
        idx = [np.flatnonzero(fine == names.index(c)) for c in classes]
        images = np.ascontiguousarray(data[np.concatenate(idx)])
        labels = np.repeat(np.arange(len(classes)), [len(i) for i in idx])
        out[split] = (images, labels, np.array(classes))
    return out


def prepare_cifar_fs(data_dir: Path, mirror: str | None) -> dict:
    """CIFAR-FS as ``prepared/cifar_fs.npz``: uint8 ``[classes, 600, 32, 32, 3]`` per split."""
    raw = data_dir / "raw"
    files = source_files("cifar_fs", mirror)
    paths = [fetch(f, raw, mirror) for f in files]
    split_names = _cifar_fs_split_names(paths[-3:])
    splits = _cifar_fs_from_mirror(paths[:4]) if mirror else _cifar_fs_from_official(paths[0], split_names)
    expected = {"train": 64, "val": 16, "test": 20}
    arrays: dict[str, np.ndarray] = {}
    for split, (images, labels, class_names) in splits.items():
        k = expected[split]
        _require(images.shape == (k * 600, 32, 32, 3) and images.dtype == np.uint8,
                 f"CIFAR-FS {split} images have shape {images.shape}, expected ({k * 600}, 32, 32, 3) uint8")
        _require(sorted(class_names.tolist()) == split_names[split],
                 f"CIFAR-FS {split} classes differ from the CIFAR-FS split")
        order = np.argsort(labels, kind="stable")
        _require(bool(np.all(np.bincount(labels, minlength=k) == 600)), f"CIFAR-FS {split}: not 600 per class")
        arrays[f"{split}_images"] = images[order].reshape(k, 600, 32, 32, 3)
        arrays[f"{split}_classes"] = np.asarray(class_names)
    digest = _save_npz(data_dir / "prepared" / "cifar_fs.npz", arrays)
    return {"file": "prepared/cifar_fs.npz", "content_sha256": digest,
            "classes": expected, "images_per_class": 600, "shape": [32, 32, 3]}


# ----------------------------------------------------------------------------------------------
# Molecules (MoleculeNet few-shot sets and FS-Mol)
# ----------------------------------------------------------------------------------------------
def _fsmol_from_official_tar(tar_path: Path, dest: Path) -> None:
    """Flatten the official FS-Mol tar (``<fold>/CHEMBLnnn.jsonl.gz``) to the mirror's CSV columns."""
    import pandas as pd

    rows: dict[str, list[dict]] = {"train": [], "valid": [], "test": []}
    with tarfile.open(tar_path) as tf:
        for member in tf:
            parts = Path(member.name).parts
            if not (member.isfile() and member.name.endswith(".jsonl.gz") and len(parts) >= 2):
                continue
            fold = parts[-2]
            if fold not in rows:
                continue
            with gzip.open(cast(IO[bytes], tf.extractfile(member)), "rt") as f:  # a file member: not None
                for line in f:
                    r = json.loads(line)
                    rows[fold].append({"assay_id": r["Assay_ID"], "smiles": r["SMILES"],
                                       "label": int(float(r["Property"])),
                                       "regression_value": r.get("RegressionProperty"),
                                       "log_regression_value": r.get("LogRegressionProperty"),
                                       "relation": r.get("Relation"), "assay_type": r.get("AssayType")})
    columns = ["assay_id", "smiles", "label", "regression_value", "log_regression_value", "relation", "assay_type"]
    for fold, fold_rows in rows.items():
        with atomic_path(dest / f"fsmol_{fold}.csv.gz") as tmp:
            pd.DataFrame(fold_rows, columns=columns).to_csv(tmp, index=False, compression="gzip")


def _moleculenet_table(name: str, path: Path, official: bool):
    """A MoleculeNet table as ``smiles`` + one 0/1/NaN column per task, checked against its known size."""
    import pandas as pd

    _, _, _, n_mols, n_tasks = _MOLECULENET[name]
    df = pd.read_csv(path)
    if official and name == "muv":
        # DeepChem's muv.csv.gz lists 40 SMILES twice; MoleculeNet's benchmark set keeps the first of each
        df = df.drop_duplicates("smiles", keep="first")
    tasks = [c for c in df.columns if c not in ("smiles", "mol_id")]
    _require(len(df) == n_mols and len(tasks) == n_tasks,
             f"{name} has {len(df)} molecules x {len(tasks)} tasks, expected {n_mols} x {n_tasks}")
    values = df[tasks].to_numpy(dtype=float)
    _require(set(np.unique(values[~np.isnan(values)])) <= {0.0, 1.0}, f"{name} labels are not binary")
    return df[["smiles", *tasks]], tasks


def prepare_molecules(data_dir: Path, mirror: str | None) -> dict:
    """MoleculeNet few-shot sets and FS-Mol as verified tables in ``prepared/molecules/`` (written as a whole)."""
    import pandas as pd

    raw = data_dir / "raw"
    paths = {f.path: fetch(f, raw, mirror) for f in source_files("molecules", mirror)}
    published_splits = json.loads(paths[_FEWSHOT_SPLITS.path].read_text()) if mirror else None
    summary: dict = {}
    with atomic_dir(data_dir / "prepared" / "molecules") as out_dir:
        for name, (mirror_file, official_file, *_) in _MOLECULENET.items():
            src = paths[f"molecules/moleculenet/{mirror_file if mirror else official_file}"]
            df, tasks = _moleculenet_table(name, src, official=not mirror)
            n_train, _ = FEWSHOT_TASK_COUNTS[name]
            split = {"train_tasks": tasks[:n_train], "test_tasks": tasks[n_train:]}
            if published_splits is not None:
                published = published_splits[name if name != "toxcast" else "toxcast_unfiltered"]
                _require(all(published[k] == split[k] for k in split),
                         f"{name} few-shot task split differs from the published one")
            df.to_csv(out_dir / f"{name}.csv.gz", index=False, compression="gzip")
            (out_dir / f"{name}_split.json").write_text(json.dumps(split, indent=1))
            summary[name] = {"molecules": len(df), "tasks": len(tasks), **{k: len(v) for k, v in split.items()}}
        if mirror:
            parts = [paths[f"molecules/fsmol/{n}"] for n in _FSMOL_MIRROR]
            folds = {"train": pd.concat([pd.read_csv(p) for p in parts[:2]]),
                     "valid": pd.read_csv(parts[2]), "test": pd.read_csv(parts[3])}
            for fold, df in folds.items():
                df.to_csv(out_dir / f"fsmol_{fold}.csv.gz", index=False, compression="gzip")
        else:
            _fsmol_from_official_tar(paths["molecules/fsmol/fsmol.tar"], out_dir)
        official = json.loads(paths[_FSMOL_TASK_LIST.path].read_text())
        fsmol = {}
        for fold in ("train", "valid", "test"):
            df = pd.read_csv(out_dir / f"fsmol_{fold}.csv.gz", usecols=["assay_id", "label"])
            assays = set(df["assay_id"])
            _require(bool(assays) and assays <= set(official[fold]),
                     f"FS-Mol {fold} is empty or holds assays outside the official task list")
            _require(set(np.unique(df["label"])) <= {0, 1}, f"FS-Mol {fold} labels are not binary")
            fsmol[fold] = {"tasks": len(assays), "official_tasks": len(official[fold]), "rows": len(df)}
        _require(fsmol["test"]["tasks"] == fsmol["test"]["official_tasks"], "FS-Mol test fold is incomplete")
        summary["fsmol"] = fsmol
    return {"folder": "prepared/molecules", **summary}


_PREPARE = {"omniglot": prepare_omniglot, "cifar_fs": prepare_cifar_fs, "molecules": prepare_molecules}


def prepare(datasets: tuple[str, ...] = DATASETS, data_dir: Path | None = None,
            mirror: str | None = None) -> dict:
    """Fetch, verify and prepare ``datasets``; return a manifest of what was written.

    ``mirror`` defaults to ``$DATA_MIRROR``; without one the official URLs are used.
    """
    unknown = [d for d in datasets if d not in _PREPARE]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; choose from {', '.join(DATASETS)}")
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    mirror = mirror if mirror is not None else default_mirror()
    return {name: _PREPARE[name](data_dir, mirror) for name in datasets}


def ensure_prepared(dataset: str, data_dir: Path | None = None) -> Path:
    """Path of the prepared form of ``dataset``, preparing it first if it is missing."""
    files = {"omniglot": "omniglot.npz", "cifar_fs": "cifar_fs.npz", "molecules": "molecules"}
    if dataset not in files:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    path = data_dir / "prepared" / files[dataset]
    if not path.exists():
        prepare((dataset,), data_dir)
    return path


def load_omniglot(split: str, data_dir: Path | None = None) -> tuple[np.ndarray, list[str]]:
    """Omniglot ``split`` (Vinyals: train/val/test, or trainval) as class-indexed images.

    Returns ``(images, class_names)`` with images uint8 ``[classes, 20, 1, 28, 28]``; each class is
    a character at one rotation (0/90/180/270 degrees counter-clockwise), named ``Alphabet/characterNN/rotDDD``.
    """
    splits = {"train": ["train"], "val": ["val"], "test": ["test"], "trainval": ["train", "val"]}
    if split not in splits:
        raise ValueError(f"unknown Omniglot split {split!r}; choose from {', '.join(splits)}")
    with np.load(ensure_prepared("omniglot", data_dir)) as z:
        images, chars = z["images"], z["characters"].tolist()
        classes = [c for s in splits[split] for c in z[f"{s}_classes"].tolist()]
    index = {c: i for i, c in enumerate(chars)}
    out = np.empty((len(classes), images.shape[1], 1, *images.shape[2:]), dtype=np.uint8)
    for i, cls in enumerate(classes):
        char, rot = cls.rsplit("/", 1)
        out[i, :, 0] = np.rot90(images[index[char]], k=int(rot[3:]) // 90, axes=(1, 2))
    return out, classes


def load_cifar_fs(split: str, data_dir: Path | None = None) -> tuple[np.ndarray, list[str]]:
    """CIFAR-FS ``split`` (train 64 / val 16 / test 20 classes, or trainval 80) as uint8
    ``[classes, 600, 3, 32, 32]``."""
    splits = {"train": ["train"], "val": ["val"], "test": ["test"], "trainval": ["train", "val"]}
    if split not in splits:
        raise ValueError(f"unknown CIFAR-FS split {split!r}; choose from {', '.join(splits)}")
    with np.load(ensure_prepared("cifar_fs", data_dir)) as z:
        images = np.concatenate([z[f"{s}_images"] for s in splits[split]]).transpose(0, 1, 4, 2, 3)
        return np.ascontiguousarray(images), [c for s in splits[split] for c in z[f"{s}_classes"].tolist()]


def load_splits(splits: tuple[str, ...] = ("train", "test"), device: str | torch.device = "cpu",
                data_dir: Path | None = None) -> dict[str, dict[str, ClassDataset]]:
    """Omniglot and CIFAR-FS ``splits`` as ``{split: {"omniglot": ..., "cifar_fs": ...}}`` on ``device``: class
    datasets of uint8 images ``[classes, per_class, C, H, W]`` named ``"<dataset>/<split>"``."""
    from metalearn.core.episodes import (
        ClassDataset,  # here, not at the top: `python -m metalearn.datasets.fetch prepare` needs no torch
    )

    loaders = {"omniglot": load_omniglot, "cifar_fs": load_cifar_fs}
    return {split: {name: ClassDataset.from_numpy(*load(split, data_dir), name=f"{name}/{split}", device=device)
                    for name, load in loaders.items()} for split in splits}


def load_molecules(name: str, data_dir: Path | None = None) -> pd.DataFrame:
    """A molecular table: MoleculeNet ``tox21/sider/muv/toxcast`` (SMILES + one column per task)
    or FS-Mol ``fsmol_train/fsmol_valid/fsmol_test`` (one row per assay measurement)."""
    import pandas as pd

    names = [*_MOLECULENET, "fsmol_train", "fsmol_valid", "fsmol_test"]
    if name not in names:
        raise ValueError(f"unknown molecular data set {name!r}; choose from {', '.join(names)}")
    return pd.read_csv(ensure_prepared("molecules", data_dir) / f"{name}.csv.gz")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m metalearn.datasets.fetch", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="fetch, verify and prepare data sets")
    p.add_argument("datasets", nargs="*", default=list(DATASETS), help=", ".join(DATASETS))
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--manifest", type=Path, default=None, help="write a JSON manifest of the prepared data")
    args = parser.parse_args(argv)
    check_mirror()
    unknown = sorted(set(args.datasets) - set(DATASETS))
    if unknown:
        raise UsageError(f"unknown dataset {unknown[0]!r}; choose from {', '.join(DATASETS)}")
    try:
        manifest = prepare(tuple(args.datasets), args.data_dir)
    except DataError as err:  # a download or a checksum failed: one line, not a caller's mistake
        raise SystemExit(f"error: {err}") from None
    text = json.dumps(manifest, indent=2, sort_keys=True)
    if args.manifest:
        with atomic_path(args.manifest) as tmp:
            tmp.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.exit(cli.run(main))
