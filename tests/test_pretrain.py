"""Pre-training baseline: prototypes, the per-task linear head, augmentation, and a short real run."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from metalearn.background.pretrain import (
    Pretraining,
    baseline_predictors,
    embed_episode,
    fit_linear_head,
    pretrain,
)
from metalearn.core.episodes import Episode, EpisodeSampler, augment_images
from metalearn.core.evaluate import evaluate
from metalearn.core.models import Classifier, Conv4, conv4_for, mlp
from metalearn.core.prototypes import class_prototypes, prototype_logits
from metalearn.core.train import RunOptions


def test_class_prototypes_are_class_means():
    f = torch.randn(3, 10, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2]).expand(3, -1)
    protos = class_prototypes(f, y, 3)
    for k in range(3):
        torch.testing.assert_close(protos[:, k], f[:, y[0] == k].mean(1))


def test_prototype_logits_are_negative_squared_distances():
    s, q = torch.randn(2, 6, 3), torch.randn(2, 4, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2]).expand(2, -1)
    protos = class_prototypes(s, y, 3)
    expected = torch.stack([torch.stack([-((q[t, i] - protos[t, k]) ** 2).sum() for k in range(3)])
                            for t in range(2) for i in range(4)]).view(2, 4, 3)
    torch.testing.assert_close(prototype_logits(s, y, q, 3), expected)


def test_linear_head_separates_tasks_independently():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(8, 5, 16, generator=g) * 3  # 8 tasks, 5 classes each, own class means
    y = torch.arange(5).repeat(4).expand(8, -1)  # 4 shots
    support = means[torch.arange(8)[:, None], y] + 0.3 * torch.randn(8, 20, 16, generator=g)
    yq = torch.arange(5).repeat(10).expand(8, -1)
    query = means[torch.arange(8)[:, None], yq] + 0.3 * torch.randn(8, 50, 16, generator=g)
    assert (fit_linear_head(support, y, query, 5) == yq).float().mean() > 0.98


def test_augment_images_is_a_flip_or_crop_of_the_input():
    x = torch.rand(64, 3, 8, 8)
    out = augment_images(x, torch.Generator().manual_seed(0), pad=0)  # no padding: flips only
    flipped = (out == x.flip(3)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert bool((flipped | same).all()) and 10 < int(flipped.sum()) < 54
    cropped = augment_images(x, torch.Generator().manual_seed(1), pad=2)
    assert cropped.shape == x.shape
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(64):  # every output is some 8x8 window of the padded image, flipped or not
        windows = [src[:, dy:dy + 8, dx:dx + 8] for src in (padded[i], padded[i].flip(2))
                   for dy in range(5) for dx in range(5)]
        assert any(torch.equal(cropped[i], w) for w in windows)


def test_backbone_shapes():
    assert Conv4()(torch.zeros(2, 1, 28, 28)).shape == (2, 64) and Conv4().feature_dim == 64
    assert conv4_for((3, 32, 32)).feature_dim == 256
    assert mlp([1, 40, 40, 1])(torch.zeros(5, 1)).shape == (5, 1)


def test_short_pretraining_beats_chance(omniglot_train, omniglot_test):
    torch.manual_seed(0)
    model = Classifier(conv4_for(tuple(omniglot_train.images.shape[2:])), omniglot_train.num_classes)
    result = pretrain(model, omniglot_train, 60, Pretraining(batch_size=64), RunOptions(seed=0, progress=False,
                                                                                      log_every=20))
    with pytest.raises(ValueError, match="cosine"):
        pretrain(model, omniglot_train, 1, Pretraining(halve_lr_every=10), RunOptions(seed=0))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    res = evaluate(baseline_predictors(model.backbone), EpisodeSampler(omniglot_test, 5, 1, 5), episodes=100)
    assert res["pretrain_finetune"].mean > 35 and res["nearest_centroid"].mean > 35  # chance is 20
    # non-transductive: a query's features do not depend on the other queries of the batch
    ep = EpisodeSampler(omniglot_test, 5, 1, 5).sample(2, torch.Generator().manual_seed(0))
    model.backbone.train()  # embed_episode must switch to running statistics by itself
    _, fq = embed_episode(model.backbone, ep)
    ep.query_x[:, 1:] = torch.rand_like(ep.query_x[:, 1:])
    _, fq_noisy = embed_episode(model.backbone, ep)
    torch.testing.assert_close(fq[:, 0], fq_noisy[:, 0])
    logits = model(omniglot_test.images[:2, 0].float() / 255)
    assert logits.shape == (2, 4112) and torch.isfinite(F.log_softmax(logits, 1)).all()


def test_transductive_features_use_each_tasks_own_batches_and_leave_the_running_statistics():
    """The baseline under the gradient methods' protocol: a task's support features are a training-mode forward of
    that support set alone, its query features of its queries alone; other tasks do not matter; the running
    statistics stay as they were."""
    torch.manual_seed(0)
    backbone = conv4_for((1, 28, 28))
    data = torch.rand(3, 5, 1, 28, 28), torch.rand(3, 10, 1, 28, 28)
    ep = Episode(data[0], torch.arange(5).repeat(3, 1), data[1], torch.arange(5).repeat(3, 2),
                 torch.arange(5).repeat(3, 1))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    fs, fq = embed_episode(backbone, ep, transductive=True)
    reference = copy.deepcopy(backbone).train()
    with torch.no_grad():
        for t in range(3):
            torch.testing.assert_close(fs[t], reference(data[0][t]))
            torch.testing.assert_close(fq[t], reference(data[1][t]))
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    _, fq_eval = embed_episode(backbone, ep)
    assert not torch.allclose(fq, fq_eval)  # the running statistics give other features
