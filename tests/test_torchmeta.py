"""torchmeta interop: the same Omniglot split, batch format and pixels through torchmeta's own classes."""

from __future__ import annotations

import pytest
import torch

import metalearn.datasets.torchmeta_compat as tmc
from metalearn.core.episodes import EpisodeSampler, make_generator
from metalearn.datasets.fetch import load_omniglot


@pytest.fixture(scope="module")
def tm_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("torchmeta")
    tmc.write_omniglot_layout(root)
    return root


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_torchmeta_split_equals_vinyals_files(tm_root, split):
    from torchmeta.datasets.helpers import omniglot

    # torchmeta's helper: Vinyals split from its own bundled assets, rotation class augmentation
    classes = omniglot(str(tm_root), shots=1, ways=1, test_shots=1, meta_split=split).dataset
    tm_chars = {f"{alphabet}/{character}" for _, alphabet, character in classes.labels}
    _, ours = load_omniglot(split)
    assert tm_chars == {name.rsplit("/", 1)[0] for name in ours}
    assert len(classes) == len(ours)  # characters x 4 rotations on both sides


def test_same_batch_format(tm_root, omniglot_train):
    batch = next(iter(tmc.omniglot_loader(tm_root, ways=5, shots=1, queries=15, tasks=4)))
    ep = EpisodeSampler(omniglot_train, 5, 1, 15).sample(4, make_generator(0))
    for (x, y), ox, oy in [(batch["train"], ep.support_x, ep.support_y), (batch["test"], ep.query_x, ep.query_y)]:
        assert x.shape == ox.shape and x.dtype == ox.dtype
        assert y.shape == oy.shape and y.dtype == oy.dtype
        assert 0 <= x.min() and x.max() <= 1
        assert sorted(y[0].tolist()) == sorted(oy[0].tolist())


def test_same_pixels_including_rotation(tm_root, omniglot_train):
    from torchmeta.datasets.helpers import omniglot

    classes = omniglot(str(tm_root), shots=1, ways=1, test_shots=1, meta_train=True).dataset
    n = classes.num_classes  # characters; torchmeta's class index = rotation * n + character
    character, rotation = 3, 1  # rotation 1 = 90 degrees
    name = "/".join(classes.labels[character][1:])
    tm_image = classes[rotation * n + character][0][0]
    ours = omniglot_train.images[omniglot_train.class_names.index(f"{name}/rot090"), 0].float() / 255
    torch.testing.assert_close(tm_image, ours, atol=1 / 255, rtol=0)
