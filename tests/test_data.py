"""Data pipeline: content of the prepared sets, real downloads over loopback HTTP, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from metalearn.datasets import fetch as data
from metalearn.datasets.fetch import ChecksumError, DataUnavailableError, RemoteFile

from .conftest import SHARED_DATA, requires_mirror


def test_omniglot_vinyals_split(omniglot_train, omniglot_test):
    val, val_names = data.load_omniglot("val")
    assert omniglot_train.images.shape == (4112, 20, 1, 28, 28)
    assert val.shape == (688, 20, 1, 28, 28)
    assert omniglot_test.images.shape == (1692, 20, 1, 28, 28)
    chars = [{n.rsplit("/", 1)[0] for n in names}
             for names in (omniglot_train.class_names, val_names, omniglot_test.class_names)]
    assert [len(c) for c in chars] == [1028, 172, 423]
    assert not (chars[0] & chars[1] or chars[0] & chars[2] or chars[1] & chars[2])
    # ink is bright on a dark background, strokes cover a small part of the image
    assert 0.02 < omniglot_train.images.float().mean().item() / 255 < 0.3


def test_omniglot_rotations_are_rotated_copies(omniglot_train):
    names = omniglot_train.class_names
    base = names.index("Gujarati/character01/rot000") if "Gujarati/character01/rot000" in names else 0
    char = names[base].rsplit("/", 1)[0]
    rot090 = names.index(f"{char}/rot090")
    np.testing.assert_array_equal(omniglot_train.images[rot090].numpy(),
                                  np.rot90(omniglot_train.images[base].numpy(), 1, axes=(2, 3)))


@requires_mirror
def test_cifar_fs_split(cifar_splits):
    shapes = {s: v[0].shape for s, v in cifar_splits.items()}
    assert shapes == {"train": (64, 600, 3, 32, 32), "val": (16, 600, 3, 32, 32), "test": (20, 600, 3, 32, 32)}
    names = [set(v[1]) for v in cifar_splits.values()]
    assert len(set.union(*names)) == 100
    expected = (SHARED_DATA / "cifar_fs/splits/bertinetto/test.txt").read_text().split()
    assert sorted(cifar_splits["test"][1]) == sorted(expected)


def test_trainval_is_train_then_val(cifar_splits):
    images, names = data.load_cifar_fs("trainval")
    assert names == cifar_splits["train"][1] + cifar_splits["val"][1]
    assert np.array_equal(images[64:], cifar_splits["val"][0]) and np.array_equal(images[:64], cifar_splits["train"][0])
    omniglot, classes = data.load_omniglot("trainval")
    assert omniglot.shape[0] == len(classes) == 4800


def test_load_splits_gives_named_class_datasets(omniglot_test, cifar_splits):
    splits = data.load_splits(("val", "test"))
    assert list(splits) == ["val", "test"] and all(list(s) == ["omniglot", "cifar_fs"] for s in splits.values())
    assert splits["test"]["omniglot"].name == "omniglot/test" and splits["val"]["cifar_fs"].name == "cifar_fs/val"
    assert np.array_equal(splits["test"]["omniglot"].images.numpy(), omniglot_test.images.numpy())
    assert np.array_equal(splits["val"]["cifar_fs"].images.numpy(), cifar_splits["val"][0])
    assert splits["val"]["cifar_fs"].class_names == cifar_splits["val"][1]


def test_molecules_tables():
    tox21 = data.load_molecules("tox21")
    assert tox21.shape == (7831, 13) and tox21.columns[0] == "smiles"
    test = data.load_molecules("fsmol_test")
    assert test["assay_id"].nunique() == 157 and set(test["label"].unique()) <= {0, 1}
    with pytest.raises(ValueError, match="unknown molecular data set"):
        data.load_molecules("qm9")


@requires_mirror
def test_download_and_prepare_over_http(tmp_path, http_mirror):
    """Real HTTP downloads from a loopback server holding the mirror, then verify and prepare."""
    url = http_mirror(SHARED_DATA)
    manifest = data.prepare(("omniglot",), data_dir=tmp_path, mirror=url)
    assert manifest["omniglot"]["classes"] == {"train": 4112, "val": 688, "test": 1692}
    reference = json.loads((Path(data.default_data_dir()) / "manifest.json").read_text())
    assert manifest["omniglot"]["content_sha256"] == reference["omniglot"]["content_sha256"]
    assert (tmp_path / "raw/omniglot/images_background.zip").exists()
    assert not list(tmp_path.rglob("*.tmp*")), "temporary files left behind"


def _corrupt_mirror(tmp_path: Path) -> Path:
    mirror = tmp_path / "mirror"
    (mirror / "molecules/moleculenet").mkdir(parents=True)
    src = SHARED_DATA / "molecules/moleculenet/sider.csv"
    blob = bytearray(src.read_bytes())
    blob[1000] ^= 0xFF
    (mirror / "molecules/moleculenet/sider.csv").write_bytes(bytes(blob))
    return mirror


@requires_mirror
def test_checksum_mismatch_names_file_and_both_hashes(tmp_path, http_mirror):
    url = http_mirror(_corrupt_mirror(tmp_path))
    remote = next(f for f in data.MOLECULES_MIRROR_FILES if f.path.endswith("sider.csv"))
    raw = tmp_path / "raw"
    with pytest.raises(ChecksumError) as err:
        data.fetch(remote, raw, mirror=url)
    msg = str(err.value)
    got = data.file_hashes(_corrupt_mirror(tmp_path / "again") / remote.path)[0]
    assert "sider.csv" in msg and remote.sha256 in msg and got in msg
    assert not raw.exists() or not any(p.is_file() for p in raw.rglob("*")), "a corrupt file was kept"


@requires_mirror
def test_prepare_with_corrupt_file_changes_nothing(tmp_path, http_mirror):
    mirror = _corrupt_mirror(tmp_path)
    for f in data.MOLECULES_MIRROR_FILES:  # everything else intact
        if not f.path.endswith("sider.csv"):
            (mirror / f.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(SHARED_DATA / f.path, mirror / f.path)
    with pytest.raises(ChecksumError, match="sider.csv"):
        data.prepare(("molecules",), data_dir=tmp_path / "data", mirror=http_mirror(mirror))
    assert not (tmp_path / "data/prepared").exists(), "something was prepared from a corrupt download"
    assert not (tmp_path / "data/raw/molecules/moleculenet/sider.csv").exists(), "the corrupt file was kept"


@requires_mirror
def test_failed_content_check_leaves_previous_preparation_intact(tmp_path):
    """A prepare that fails half-way (here: FS-Mol's task list does not match) changes nothing."""
    target = tmp_path / "data/prepared/molecules"
    target.mkdir(parents=True)
    (target / "tox21.csv.gz").write_bytes(b"previous")
    mirror = tmp_path / "mirror"
    shutil.copytree(SHARED_DATA / "molecules", mirror / "molecules")
    task_list = mirror / "molecules/fsmol/fsmol-0.1.json"
    tasks = json.loads(task_list.read_text())
    tasks["test"] = tasks["test"][1:]  # one test assay is now "outside the official list"
    task_list.write_text(json.dumps(tasks))
    sha = data.file_hashes(task_list)[0]
    patched = tuple(RemoteFile(f.path, f.url, sha) if f.path.endswith("fsmol-0.1.json") else f
                    for f in data.MOLECULES_MIRROR_FILES)
    original = data.MOLECULES_MIRROR_FILES
    data.MOLECULES_MIRROR_FILES = patched
    try:
        with pytest.raises(data.ContentError, match="FS-Mol test"):
            data.prepare(("molecules",), data_dir=tmp_path / "data", mirror=str(mirror))
    finally:
        data.MOLECULES_MIRROR_FILES = original
    assert [p.name for p in target.iterdir()] == ["tox21.csv.gz"]
    assert (target / "tox21.csv.gz").read_bytes() == b"previous"
    assert [p.name for p in target.parent.iterdir()] == ["molecules"], "temporary folders left behind"


def test_missing_offline_names_data_mirror_and_url(tmp_path):
    remote = RemoteFile("omniglot/images_background.zip", "http://127.0.0.1:9/images_background.zip", "0" * 64)
    with pytest.raises(DataUnavailableError, match="DATA_MIRROR") as err:
        data.fetch(remote, tmp_path / "raw")
    assert "http://127.0.0.1:9/images_background.zip" in str(err.value)
    with pytest.raises(DataUnavailableError, match="DATA_MIRROR"):
        data.fetch(remote, tmp_path / "raw", mirror=str(tmp_path / "empty"))
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_atomic_path_leaves_nothing_on_interrupt(tmp_path):
    dest = tmp_path / "out.npz"
    with pytest.raises(KeyboardInterrupt), data.atomic_path(dest) as tmp:
        tmp.write_bytes(b"half a file")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_unknown_dataset_and_split():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.prepare(("imagenet",))
    with pytest.raises(ValueError, match="unknown Omniglot split"):
        data.load_omniglot("valid")
