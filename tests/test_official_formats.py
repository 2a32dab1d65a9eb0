"""The official archives differ in format from the mirror (CIFAR-100 python pickles, FS-Mol per-task
jsonl.gz in a tar). Build archives in the official formats from the real mirror data and check that the
converters give back the same content."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
import tarfile

import numpy as np
import pandas as pd

from metalearn.datasets import fetch as data

from .conftest import SHARED_DATA, requires_mirror

pytestmark = requires_mirror


def _add(tf: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tf.addfile(info, io.BytesIO(payload))


def test_cifar100_python_tarball_gives_the_same_cifar_fs(tmp_path, cifar_splits):
    meta = json.loads((SHARED_DATA / "cifar_fs/classes.json").read_text())
    names = meta["fine_label_names"]
    images, fine = [], []
    for f in ("train_part0", "train_part1", "val", "test"):
        with np.load(SHARED_DATA / f"cifar_fs/{f}.npz") as z:
            images.append(z["images"])
            fine.append(z["fine_labels"])
    images, fine = np.concatenate(images), np.concatenate(fine)
    order = np.random.default_rng(0).permutation(len(images))  # official order differs from the mirror's
    images, fine = images[order], fine[order]
    flat = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CIFAR rows: R plane, G plane, B plane
    tar_path = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(tar_path, "w") as tf:
        _add(tf, "cifar-100-python/meta", pickle.dumps({"fine_label_names": names}))
        _add(tf, "cifar-100-python/train", pickle.dumps({"data": flat[:50000], "fine_labels": fine[:50000].tolist()}))
        _add(tf, "cifar-100-python/test", pickle.dumps({"data": flat[50000:], "fine_labels": fine[50000:].tolist()}))
    split_files = [SHARED_DATA / f"cifar_fs/splits/torchmeta/cifar-fs/{s}.json" for s in ("train", "val", "test")]
    converted = data._cifar_fs_from_official(tar_path, data._cifar_fs_split_names(split_files))

    def per_class_hashes(imgs, labels):
        return {int(k): sorted(hashlib.sha1(im.tobytes()).hexdigest() for im in imgs[labels == k])
                for k in np.unique(labels)}

    for split, (imgs, labels, classes) in converted.items():
        ours, our_names = cifar_splits[split]
        assert list(classes) == our_names
        prepared = ours.transpose(0, 1, 3, 4, 2)  # back to HWC
        expected = {k: sorted(hashlib.sha1(im.tobytes()).hexdigest() for im in prepared[k])
                    for k in range(len(our_names))}
        assert per_class_hashes(imgs, labels) == expected


def test_fsmol_official_tar_flattens_to_the_mirror_columns(tmp_path):
    test = pd.read_csv(SHARED_DATA / "molecules/fsmol/fsmol_test.csv.gz")
    assays = sorted(test["assay_id"].unique())[:3]
    tar_path = tmp_path / "fsmol.tar"
    with tarfile.open(tar_path, "w") as tf:
        for assay in assays:
            rows = test[test["assay_id"] == assay]
            lines = [json.dumps({"Assay_ID": r.assay_id, "SMILES": r.smiles, "Property": str(float(r.label)),
                                 "RegressionProperty": r.regression_value,
                                 "LogRegressionProperty": r.log_regression_value, "Relation": r.relation,
                                 "AssayType": r.assay_type, "fingerprints": [0, 1]})
                     for r in rows.itertuples()]
            _add(tf, f"fs-mol/test/{assay}.jsonl.gz", gzip.compress(("\n".join(lines) + "\n").encode()))
    data._fsmol_from_official_tar(tar_path, tmp_path)
    got = pd.read_csv(tmp_path / "fsmol_test.csv.gz")
    want = test[test["assay_id"].isin(assays)].reset_index(drop=True)
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)
