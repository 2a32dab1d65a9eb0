"""Meta Networks: gradient preprocessing, layer augmentation, fast weights from the support set, slow weights kept."""

from __future__ import annotations

import math

import pytest
import torch

from metalearn.core.episodes import ClassDataset, EpisodeSampler, make_generator
from metalearn.model_based.meta_networks import FastWeightNet, MetaNetwork, preprocess_gradient, rotate_classes


def test_gradient_preprocessing_is_andrychowicz_with_p_7() -> None:
    out = preprocess_gradient(torch.tensor([1.0, -1e-5, 0.0]))
    assert out.shape == (3, 2)
    assert torch.allclose(out[0], torch.tensor([0.0, 1.0]), atol=1e-6)  # log 1 = 0; e^7 * 1 clipped to 1
    assert torch.allclose(out[1], torch.tensor([-1.0, -1e-5 * math.exp(7)]), atol=1e-6)  # log part clamped at -1
    assert out[2].tolist() == [-1.0, 0.0]


def test_zero_fast_weights_leave_the_slow_network_and_fast_weights_add_to_it() -> None:
    torch.manual_seed(0)
    net = FastWeightNet(1, 8, 3, [8, 5], augmented=["conv1", "conv2", "fc0", "fc1"])
    x = torch.randn(4, 1, 8, 8)
    zero = {k: torch.zeros_like(net.weights[k]) for k in net.augmented}
    assert torch.allclose(net(x, zero), net(x))
    # the output layer is a plain sum: fast = slow on it alone doubles the logits
    assert torch.allclose(net(x, {"fc1": net.weights["fc1"]}), 2 * net(x), atol=1e-6)
    with pytest.raises(ValueError, match="not layers"):
        FastWeightNet(1, 8, 3, [8], augmented=["conv9"])


def _data() -> ClassDataset:
    images = torch.randint(0, 256, (8, 6, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return ClassDataset(images, [f"c{i}" for i in range(8)], "toy")


def _net(**kw) -> MetaNetwork:
    torch.manual_seed(0)
    return MetaNetwork(1, 3, hidden=8, blocks=3, augmented_blocks=2, chunks=3, **kw)


def test_fast_weights_follow_the_support_set_and_the_slow_weights_stay() -> None:
    net = _net()
    ep = EpisodeSampler(_data(), 3, 2, 2).sample(2, make_generator(0))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    m0 = net.example_fast_weights(ep.support_x[0], ep.support_y[0])
    m1 = net.example_fast_weights(ep.support_x[1], ep.support_y[1])
    assert set(m0) == {"conv1", "conv2", "fc0", "fc1"}  # the augmented layers of b
    assert m0["conv1"].shape == (6, 8, 8, 3, 3) and m0["fc1"].shape == (6, 3, 8)  # one slot per support example
    assert all(not torch.allclose(m0[k], m1[k]) for k in m0)  # another support set, other fast weights
    q0 = net.task_fast_weights(ep.support_x[0], ep.support_y[0])
    assert set(q0) == {"conv1", "conv2", "fc0"} and q0["fc0"].shape == (8, 8)  # u's, one per task
    assert not torch.allclose(q0["fc0"], net.task_fast_weights(ep.support_x[1], ep.support_y[1])["fc0"])
    # the inner pass reads gradients of the slow weights without changing them or leaving .grad behind
    logits = net(ep.support_x, ep.support_y, ep.query_x, 3)
    assert logits.shape == (2, 6, 3)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    # the queries' loss trains everything: slow weights, the generators m and d, and u's keys
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), ep.query_y.flatten()).backward()
    for name in ("base.weights.conv0", "base.weights.fc1", "rep.weights.conv2", "m.conv.net.0.weight",
                 "m.fc.net.4.weight", "d.conv.lstm.weight_ih_l0", "d.fc.out.weight"):
        g = dict(net.named_parameters())[name].grad
        assert g is not None and g.abs().sum() > 0, name
    # u's loss_emb classifier is only used for meta information (first order): it gets no gradient
    assert net.rep_head.weight.grad is None


def test_each_query_is_predicted_on_its_own_and_ways_are_checked() -> None:
    net = _net()
    ep = EpisodeSampler(_data(), 3, 1, 3).sample(1, make_generator(1))
    with torch.no_grad():  # meta information still needs gradients inside (evaluation runs under no_grad)
        all_q = net(ep.support_x, ep.support_y, ep.query_x, 3)
        one = net(ep.support_x, ep.support_y, ep.query_x[:, 4:5], 3)
    assert torch.allclose(one[0, 0], all_q[0, 4], atol=1e-5)
    with pytest.raises(ValueError, match="3 classes"):
        net(ep.support_x, ep.support_y, ep.query_x, 5)


def test_rotation_turns_a_class_as_a_whole() -> None:
    ep = EpisodeSampler(_data(), 3, 2, 2).sample(4, make_generator(2))
    rot = rotate_classes(ep, make_generator(3))
    for t in range(4):
        for c in range(3):
            s, q = ep.support_x[t][ep.support_y[t] == c], ep.query_x[t][ep.query_y[t] == c]
            rs, rq = rot.support_x[t][ep.support_y[t] == c], rot.query_x[t][ep.query_y[t] == c]
            turns = [k for k in range(4) if torch.equal(s.rot90(k, (-2, -1)), rs)]
            assert turns and any(torch.equal(q.rot90(k, (-2, -1)), rq) for k in turns)


@pytest.mark.parametrize("head", [False, True])
def test_example_gradients_are_each_example_loss_alone(head: bool) -> None:
    """The batched per-example gradients equal autograd's on each example's cross-entropy alone (float64), for
    augmented convolutions (the input layer and a hidden one) and linear layers, with or without a classifier head."""
    torch.manual_seed(0)
    net = FastWeightNet(2, 4, 3, [5, 3], ["conv0", "conv2", "fc0", "fc1"]).double()
    w_head = torch.randn(3, 3, dtype=torch.double) if head else None
    x, y = torch.randn(6, 2, 8, 8, dtype=torch.double), torch.tensor([0, 1, 2, 2, 1, 0])
    grads = net.example_gradients(x, y, w_head)
    assert set(grads) == {"conv0", "conv2", "fc0", "fc1"}
    for i in range(len(x)):
        out = net(x[i : i + 1])
        loss = torch.nn.functional.cross_entropy(out if w_head is None else out @ w_head.T, y[i : i + 1])
        expected = torch.autograd.grad(loss, [net.weights[k] for k in grads])
        for k, e in zip(grads, expected, strict=True):
            assert grads[k].shape == (6, *e.shape)
            assert torch.allclose(grads[k][i], e, atol=1e-12), (k, i)
    assert all(not g.requires_grad for g in grads.values())  # inputs to the generators, never differentiated


def test_a_batch_of_tasks_scores_each_task_as_it_would_alone() -> None:
    """forward() takes every task of a batch at once (one pass per network, each task's Q* and each query's W*_j
    apart); it equals the tasks scored one at a time, and its fast weights equal the one-task ones, in float64."""
    net = _net().double()
    ep = EpisodeSampler(_data(), 3, 2, 2).sample(4, make_generator(1))
    sx, qx = ep.support_x.double(), ep.query_x.double()
    together = net(sx, ep.support_y, qx, 3)
    alone = torch.cat([net(sx[t:t + 1], ep.support_y[t:t + 1], qx[t:t + 1], 3) for t in range(4)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-12)
    q = net.task_fast_weights(sx, ep.support_y)
    m = net.example_fast_weights(sx, ep.support_y)
    for t in (0, 3):
        q_t, m_t = net.task_fast_weights(sx[t], ep.support_y[t]), net.example_fast_weights(sx[t], ep.support_y[t])
        assert all(torch.allclose(q[k][t], q_t[k], rtol=0, atol=1e-12) for k in q_t)
        assert all(torch.allclose(m[k][t], m_t[k], rtol=0, atol=1e-12) for k in m_t)
