"""ANIL's body-once meta-step and the feature-reuse measurement (linear CKA before vs after the inner loop)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from metalearn.core.models import mlp
from metalearn.core.train import RunOptions
from metalearn.gradient.anil import layer_similarity, linear_cka, train_anil
from metalearn.gradient.inner_loop import head_names
from metalearn.gradient.maml import train_maml
from metalearn.gradient.outer_loop import MetaTraining, meta_loss
from metalearn.gradient.task_batched import anil_meta_loss, body_and_head
from tests.test_maml import conv_net, episode


def meta_gradient(loss_fn, model: nn.Module, ep, **kw: object) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss, _ = loss_fn(model, ep, **kw)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("inner_steps", [1, 3])
def test_anil_step_equals_maml_restricted_to_the_head(inner_steps: int, first_order: bool) -> None:
    model = conv_net()
    kw = dict(inner_steps=inner_steps, inner_lr=0.3, first_order=first_order, names=head_names(model))
    ref = meta_gradient(meta_loss, copy.deepcopy(model), episode(), **kw)
    got = meta_gradient(anil_meta_loss, copy.deepcopy(model), episode(), **kw)
    scale = max(g.abs().max() for g in ref.values())
    assert scale > 0 and ref["backbone.blocks.0.0.weight"].abs().max() > 0  # the body does get a meta-gradient
    for n in ref:
        assert torch.allclose(got[n], ref[n], rtol=0, atol=1e-10 * scale), n


def test_anil_step_on_an_mlp_and_its_errors() -> None:
    torch.manual_seed(0)
    model = mlp([4, 16, 16, 3]).double()
    g = torch.Generator().manual_seed(0)
    ep = type("Tasks", (), dict(support_x=torch.randn(2, 6, 4, generator=g, dtype=torch.float64),
                                support_y=torch.randint(0, 3, (2, 6), generator=g),
                                query_x=torch.randn(2, 9, 4, generator=g, dtype=torch.float64),
                                query_y=torch.randint(0, 3, (2, 9), generator=g)))
    kw = dict(inner_steps=2, inner_lr=0.5, names=head_names(model))
    ref, got = meta_gradient(meta_loss, model, ep, **kw), meta_gradient(anil_meta_loss, model, ep, **kw)
    for n in ref:
        assert torch.allclose(got[n], ref[n], rtol=1e-10, atol=1e-12), n
    with pytest.raises(ValueError, match="adapts only the head"):
        anil_meta_loss(model, ep, inner_steps=1, inner_lr=0.1, names=["0.weight"])
    with pytest.raises(ValueError, match="body and head"):
        body_and_head(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    with pytest.raises(ValueError, match="set inner='head'"):
        train_maml(model, None, 1, MetaTraining(tasks=1, inner_steps=1, inner_lr=0.1, inner="all", meta_step="head"),
                   RunOptions(seed=0))
    with pytest.raises(ValueError, match="ANIL adapts only the head"):
        train_anil(model, None, 1, MetaTraining(tasks=1, inner_steps=1, inner_lr=0.1, inner="all"), RunOptions(seed=0))


def test_train_maml_head_step_matches_the_loop() -> None:
    """One meta-step of ANIL through train_maml: the body-once step and the full loop end at the same weights."""
    class Sampler:
        examples_per_task = 1

        def sample(self, tasks: int, generator: torch.Generator):
            return episode()

    ends = []
    for meta_step in ("loop", "head"):
        model = conv_net()
        train_anil(model, Sampler(), 1, MetaTraining(tasks=2, inner_steps=2, inner_lr=0.3, inner="head",
                                                     meta_step=meta_step), RunOptions(seed=0, progress=False))
        ends.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.allclose(ends[0], ends[1], rtol=0, atol=1e-9)


def test_linear_cka() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    assert linear_cka(x, x).item() == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, 3.0 * x @ q + 1.0).item() == pytest.approx(1.0, abs=1e-12)  # rotation, scale, shift
    assert linear_cka(x, torch.randn(50, 8, generator=g, dtype=torch.float64)).item() < 0.5
    assert 0 < linear_cka(x, x[:, :2]).item() < 1
    with pytest.raises(ValueError, match="same number"):
        linear_cka(x, x[:10])



def test_linear_cka_gram_form_equals_the_feature_space_form() -> None:
    """⟨HKH, HLH⟩ / (‖HKH‖ ‖HLH‖) on Gram matrices is ‖Yᵀ X‖² / (‖Xᵀ X‖ ‖Yᵀ Y‖) on centred features."""
    g = torch.Generator().manual_seed(1)
    for d_x, d_y in ((200, 50), (3, 7), (64, 64)):
        x = torch.randn(30, d_x, generator=g, dtype=torch.float64)
        y = x[:, :1].expand(-1, d_y) * torch.randn(d_y, generator=g, dtype=torch.float64) + torch.randn(
            30, d_y, generator=g, dtype=torch.float64)  # partly related to x
        xc, yc = x - x.mean(0), y - y.mean(0)
        feature_space = (yc.T @ xc).norm() ** 2 / ((xc.T @ xc).norm() * (yc.T @ yc).norm())
        assert linear_cka(x, y).item() == pytest.approx(feature_space.item(), rel=1e-10, abs=1e-12)
    images = torch.randn(10, 3, 4, 4, generator=g)  # [n, ...] is flattened per example, float32 computed in float64
    assert linear_cka(images, images.flatten(1)[:, :20]).item() == pytest.approx(
        linear_cka(images.flatten(1).double(), images.flatten(1)[:, :20].double()).item(), abs=1e-12)

def test_layer_similarity_sees_an_unchanged_body_under_anil() -> None:
    """Adapting only the head leaves every body layer's representation unchanged (CKA 1), but not the head's; adapting
    everything changes the body too. The model itself is never modified."""
    model = conv_net()
    layers = {f"block {i + 1}": b for i, b in enumerate(model.backbone.blocks)} | {"head": model.head}
    before = copy.deepcopy(model.state_dict())
    anil = layer_similarity(model, layers, episode(), inner_steps=5, inner_lr=0.5, names=head_names(model))
    maml = layer_similarity(model, layers, episode(), inner_steps=5, inner_lr=0.5)
    for i in range(4):
        assert anil[f"block {i + 1}"] == pytest.approx([1.0, 1.0], abs=1e-12)
    assert max(anil["head"]) < 1 - 1e-6
    assert min(maml["block 4"]) < 1 - 1e-6
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
