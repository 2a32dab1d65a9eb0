"""Test-time adaptation of many episodes at once (gradient.batched + evaluation.Adapted) against the one-episode
loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metalearn.core.models import Classifier, conv4_for
from metalearn.gradient.batched import batched_forward, supports
from metalearn.gradient.evaluation import Adapted
from metalearn.gradient.inner_loop import BN_PROTOCOLS, Adaptation
from metalearn.gradient.networks import StridedConv4

BOTH = [(p, slice(None)) for p in BN_PROTOCOLS]  # every query under each BatchNorm protocol


def _tasks(t: int = 5, ways: int = 5, shots: int = 2, queries: int = 3, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(t, ways * shots, 1, 28, 28, generator=g, dtype=dtype)
    sy = torch.arange(ways).repeat_interleave(shots).repeat(t, 1)
    qx = torch.randn(t, ways * queries, 1, 28, 28, generator=g, dtype=dtype)
    return sx, sy, qx


def _net(kind: str) -> nn.Module:
    torch.manual_seed(0)
    body = StridedConv4(1, 8) if kind == "strided" else conv4_for((1, 28, 28), hidden=8)
    return Classifier(body, 5).double()


@pytest.mark.parametrize("kind", ["strided", "maxpool"])
@pytest.mark.parametrize("inner", ["no_norms", "all", "head"])
def test_batched_outputs_equal_the_loop_in_float64(kind: str, inner: str) -> None:
    model = _net(kind)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    learner = Adapted(model, Adaptation(steps=3, lr=0.4, inner=inner, protocol="nichol"), chunk=2)
    sx, sy, qx = _tasks()
    loop = learner.views_per_task(sx, sy, qx, BOTH)
    batched = learner.views_batched(sx, sy, qx, BOTH)
    for a, b in zip(loop, batched, strict=True):
        assert a.shape == b.shape == (5, 15, 5)
        torch.testing.assert_close(b, a, rtol=0, atol=1e-10)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "adaptation changed the network"
    assert not torch.allclose(loop[0], loop[1]), "the two BatchNorm protocols should differ"


def test_an_mlp_adapts_batched_too() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    g = torch.Generator().manual_seed(1)
    sx, qx = torch.randn(4, 6, 16, generator=g, dtype=torch.float64), torch.randn(4, 5, 16, generator=g,
                                                                                dtype=torch.float64)
    sy = torch.tensor([0, 1] * 3).repeat(4, 1)
    learner = Adapted(model, Adaptation(steps=2, lr=0.1, inner="all", protocol="transductive"))
    torch.testing.assert_close(learner.views_batched(sx, sy, qx, BOTH)[1], learner.views_per_task(sx, sy, qx, BOTH)[1],
                               rtol=0, atol=1e-12)


def test_chunks_do_not_change_the_result_but_misaligned_tasks_do() -> None:
    model = _net("strided")
    sx, sy, qx = _tasks(t=7)
    rule = Adaptation(steps=2, lr=0.4, inner="no_norms", protocol="nichol")
    whole = Adapted(model, rule, chunk=7).views_batched(sx, sy, qx, BOTH)
    for chunk in (1, 3):
        parts = Adapted(model, rule, chunk=chunk).views_batched(sx, sy, qx, BOTH)
        for a, b in zip(whole, parts, strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
    # a deliberately wrong chunking: each task's queries scored with the next task's adapted weights
    wrong = Adapted(model, rule, chunk=3).views_batched(sx, sy, qx.roll(1, dims=0), BOTH)
    assert not torch.allclose(wrong[1], whole[1].roll(1, dims=0), atol=1e-6)
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        Adapted(model, rule, chunk=0)


def test_float32_predictions_agree_with_the_loop() -> None:
    model = _net("strided").float()
    sx, sy, qx = _tasks(t=20, dtype=torch.float32)
    learner = Adapted(model, Adaptation(steps=5, lr=0.05, inner="no_norms", protocol="nichol"))
    for a, b in zip(learner.views_per_task(sx, sy, qx, BOTH), learner.views_batched(sx, sy, qx, BOTH), strict=True):
        assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.99
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)


def test_which_networks_and_tasks_run_batched() -> None:
    assert supports(_net("strided")) and not supports(nn.Sequential(nn.LSTM(2, 2)))
    learner = Adapted(_net("maxpool"), Adaptation(steps=1, lr=0.4, inner="all", protocol="nichol"))
    assert learner.path(torch.zeros(1, 5, 1, 28, 28)) == "lean"  # a CPU: the lean engine, at any support size
    assert Adapted(nn.Sequential(nn.Linear(2, 2), nn.Dropout()), Adaptation(steps=1, lr=0.4, inner="all",
                                                                            protocol="nichol")).path(
        torch.zeros(1, 5, 2)) == "loop"  # a layer the functional paths do not run
    with pytest.raises(ValueError, match="does not support"):
        batched_forward(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Dropout()), {}, torch.zeros(1, 1, 1, 4, 4))
