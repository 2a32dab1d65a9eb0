"""torchmeta 1.8.0 on Python 3.11 / torch 2.13, and our Omniglot in torchmeta's on-disk layout.

torchmeta 1.8.0 (the last release, 2020) pins torch<1.10, which has no Python 3.11 wheels, so it is
installed with ``pip install --no-deps torchmeta==1.8.0`` and needs three fixes, applied on import
of this module (import it before ``torchmeta``):

1. PyPI's torchvision 0.28.0 wheel links CUDA libraries absent from the CPU torch wheel, so its C ops
   never register and ``import torchvision`` fails with "operator torchvision::nms does not exist".
   We declare the two operator schemas its Python import touches (torchmeta uses no torchvision C op).
2. torchmeta imports ``_get_confirm_token`` / ``_save_response_content`` from
   ``torchvision.datasets.utils`` (Google-Drive download helpers since removed): define them as None.
3. torch >= 2.x ``Subset`` requires ``__getitems__`` next to an overridden ``__getitem__``:
   give torchmeta's ``SubsetTask`` one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

_TORCHVISION_OPS = None


def _import_torchvision() -> None:
    global _TORCHVISION_OPS
    try:
        import torchvision  # noqa: F401

        return
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _TORCHVISION_OPS = torch.library.Library("torchvision", "DEF")  # kept alive for the process
    _TORCHVISION_OPS.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_OPS.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401


_import_torchvision()
import torchvision.datasets.utils as _tv_utils  # noqa: E402

for _name in ("_get_confirm_token", "_save_response_content"):
    if not hasattr(_tv_utils, _name):
        setattr(_tv_utils, _name, None)

from torchmeta.utils.data.task import SubsetTask  # noqa: E402

if "__getitems__" not in SubsetTask.__dict__:
    SubsetTask.__getitems__ = lambda self, indices: [self[i] for i in indices]


def write_omniglot_layout(root: Path | None = None, data_dir: Path | None = None) -> Path:
    """Write our prepared Omniglot in torchmeta's layout under ``root/omniglot`` and return ``root``.

    ``root`` defaults to ``<data_dir>/torchmeta``. The layout is rewritten whenever the prepared
    Omniglot changes (``data.hdf5`` records the SHA-256 of the file it was made from).

    ``data.hdf5`` holds one uint8 dataset ``[20, 28, 28]`` per character (ink = 255, as torchmeta
    stores it) under ``images_background|images_evaluation/<alphabet>/<character>``; the Vinyals label
    files are built from torchmeta's *own* bundled split assets, exactly as its ``download()`` does.
    Images are stored already resized to 28x28, so torchmeta's ``Resize(28)`` leaves them unchanged.
    """
    import h5py
    import numpy as np
    from torchmeta.datasets.utils import get_asset

    from metalearn.core.files import atomic_path, file_hashes
    from metalearn.datasets.fetch import default_data_dir, ensure_prepared

    root = Path(root) if root is not None else Path(data_dir or default_data_dir()) / "torchmeta"
    folder = root / "omniglot"
    source = ensure_prepared("omniglot", data_dir)
    source_sha = file_hashes(source)[0]
    if (folder / "data.hdf5").exists() and all((folder / f"vinyals_{s}_labels.json").exists()
                                               for s in ("train", "val", "test")):
        with h5py.File(folder / "data.hdf5", "r") as f:
            if f.attrs.get("metalearn_source_sha256") == source_sha:
                return root
    with np.load(source) as z:
        images, chars = z["images"], z["characters"].tolist()
    groups = {}
    for split in ("train", "val", "test"):
        assets = get_asset("omniglot", f"{split}.json", dtype="json")
        labels = sorted([f"images_{name}", alphabet, character]
                        for name, alphabets in assets.items()
                        for alphabet, characters in alphabets.items() for character in characters)
        for group, alphabet, character in labels:
            groups[f"{alphabet}/{character}"] = group
        with atomic_path(folder / f"vinyals_{split}_labels.json") as tmp:
            tmp.write_text(json.dumps(labels))
    with atomic_path(folder / "data.hdf5") as tmp, h5py.File(tmp, "w") as f:
        for i, char in enumerate(chars):
            f.create_dataset(f"{groups[char]}/{char}", data=images[i])
        f.attrs["metalearn_source_sha256"] = source_sha
    return root


def omniglot_loader(root: Path, ways: int, shots: int, queries: int, tasks: int, split: str = "train",
                    seed: int = 0, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """torchmeta's Omniglot (Vinyals split, 28x28, rotation class augmentation) + ``BatchMetaDataLoader``.

    ``root`` is the folder :func:`write_omniglot_layout` returned. Batches are dicts with ``"train"``
    (support) and ``"test"`` (query) pairs of inputs ``[tasks, ways*shots, 1, 28, 28]`` and labels."""
    from torchmeta.datasets.helpers import omniglot
    from torchmeta.utils.data import BatchMetaDataLoader

    dataset = omniglot(str(root), shots=shots, ways=ways, test_shots=queries, seed=seed,
                       meta_train=split == "train", meta_val=split == "val", meta_test=split == "test")
    return BatchMetaDataLoader(dataset, batch_size=tasks, num_workers=num_workers, shuffle=True)
