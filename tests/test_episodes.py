"""Episode engine: shapes, labels, class and example bookkeeping, seeding, validation, sinusoids."""

from __future__ import annotations

import math

import pytest
import torch

from metalearn.core.episodes import (
    ClassDataset,
    EpisodeSampler,
    augment_episode,
    augment_images,
    make_generator,
    resolve_device,
    sample_sinusoid,
)


@pytest.fixture(scope="module")
def small() -> ClassDataset:
    # class c, example e is a constant image of value c*20+e: every pixel says where it came from
    values = torch.arange(10 * 20, dtype=torch.uint8).view(10, 20, 1, 1, 1).expand(10, 20, 1, 4, 4)
    return ClassDataset(values.contiguous(), [f"c{i}" for i in range(10)], "small")


def test_shapes_and_labels(omniglot_train):
    ep = EpisodeSampler(omniglot_train, ways=5, shots=2, queries=3).sample(4, make_generator(0))
    assert ep.support_x.shape == (4, 10, 1, 28, 28) and ep.query_x.shape == (4, 15, 1, 28, 28)
    assert ep.support_x.dtype == torch.float32 and 0 <= ep.support_x.min() and ep.support_x.max() <= 1
    assert ep.support_y[0].tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert ep.query_y.shape == (4, 15) and ep.query_y.dtype == torch.int64
    assert ep.classes.shape == (4, 5)


def test_examples_come_from_their_class_and_never_repeat(small):
    ep = EpisodeSampler(small, ways=4, shots=3, queries=5).sample(16, make_generator(1))
    code_s = (ep.support_x[:, :, 0, 0, 0] * 255).round().long()  # [tasks, ways*shots]
    code_q = (ep.query_x[:, :, 0, 0, 0] * 255).round().long()
    for t in range(16):
        assert len(set(ep.classes[t].tolist())) == 4, "classes repeat within a task"
        cls = ep.classes[t]
        assert torch.equal(code_s[t] // 20, cls[ep.support_y[t]])
        assert torch.equal(code_q[t] // 20, cls[ep.query_y[t]])
        codes = torch.cat([code_s[t], code_q[t]]).tolist()
        assert len(set(codes)) == len(codes), "an example is both support and query, or repeats"


def test_seeded_and_reproducible(small):
    sampler = EpisodeSampler(small, 5, 1, 2)
    a, b = sampler.sample(8, make_generator(7)), sampler.sample(8, make_generator(7))
    c = sampler.sample(8, make_generator(8))
    assert torch.equal(a.query_x, b.query_x) and torch.equal(a.classes, b.classes)
    assert not torch.equal(a.classes, c.classes)


def test_class_usage_is_uniform(small):
    ep = EpisodeSampler(small, 5, 1, 1).sample(4000, make_generator(0))
    counts = torch.bincount(ep.classes.flatten(), minlength=10).float()
    assert counts.sum() == 20000
    assert (counts / 2000 - 1).abs().max() < 0.1


@pytest.mark.parametrize("kwargs, message", [
    (dict(ways=11, shots=1, queries=1), "exceeds the 10 classes"),
    (dict(ways=5, shots=15, queries=6), "exceeds the 20 examples per class"),
    (dict(ways=0, shots=1, queries=1), "ways must be a positive integer"),
    (dict(ways=5, shots=-1, queries=1), "shots must be a positive integer"),
    (dict(ways=5, shots=1, queries=0), "queries must be a positive integer"),
])
def test_bad_arguments_raise_before_work(small, kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(small, **kwargs)


def test_bad_task_count(small):
    with pytest.raises(ValueError, match="tasks must be a positive integer"):
        EpisodeSampler(small, 2, 1, 1).sample(0, make_generator(0))


def test_class_dataset_validates_shape_and_dtype():
    with pytest.raises(ValueError, match=r"\[classes, per_class, C, H, W\]"):
        ClassDataset(torch.zeros(3, 4, 5, dtype=torch.uint8), ["a", "b", "c"])
    with pytest.raises(ValueError, match="uint8"):
        ClassDataset(torch.zeros(3, 4, 1, 2, 2), ["a", "b", "c"])


def test_sinusoid_tasks():
    tasks = sample_sinusoid(500, 5, 10, make_generator(0))
    assert tasks.support_x.shape == (500, 5, 1) and tasks.query_y.shape == (500, 10, 1)
    assert 0.1 <= tasks.amplitude.min() and tasks.amplitude.max() <= 5.0
    assert 0 <= tasks.phase.min() and tasks.phase.max() <= math.pi
    assert -5 <= tasks.support_x.min() and tasks.query_x.max() <= 5
    expected = tasks.amplitude[:, None, None] * torch.sin(tasks.query_x - tasks.phase[:, None, None])
    torch.testing.assert_close(tasks.query_y, expected)


def test_resolve_device():
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_samples_on_cuda(small):
    ep = EpisodeSampler(small.to("cuda"), 5, 1, 2).sample(4, make_generator(0, "cuda"))
    assert ep.support_x.is_cuda and ep.query_y.is_cuda


def test_augment_episode_flips_and_crops_support_and_query_alike(cifar_splits):
    images, names = cifar_splits["train"]
    data = ClassDataset.from_numpy(images[:10], names[:10], "cifar")
    ep = EpisodeSampler(data, 5, 2, 3).sample(4, torch.Generator().manual_seed(0))
    out = augment_episode(ep, torch.Generator().manual_seed(1))
    assert out.support_x.shape == ep.support_x.shape and out.query_x.shape == ep.query_x.shape
    assert torch.equal(out.support_y, ep.support_y) and torch.equal(out.query_y, ep.query_y)
    g = torch.Generator().manual_seed(1)  # the same draws as augment_images on each set of images in turn
    assert torch.equal(out.support_x, augment_images(ep.support_x, g))
    assert torch.equal(out.query_x, augment_images(ep.query_x, g))
    assert not torch.equal(out.query_x, ep.query_x)
