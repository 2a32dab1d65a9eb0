"""HyperNetworks: generated kernel shapes and placement, parameter counts, and the task-conditioned head."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalearn.core.models import Conv4
from metalearn.metric.protonet import ProtoNet
from metalearn.model_based.hypernetwork import HyperConv, HyperConv4, KernelHyperNetwork, TaskHyperNet, parameter_count


def test_kernel_hypernetwork_shapes_and_parameter_count() -> None:
    hyper = KernelHyperNetwork(z_dim=4, hidden=8, tile=16, kernel=3)
    assert hyper(torch.randn(5, 4)).shape == (5, 16, 16, 3, 3)
    # W_c [16, 8, 4] + B_c [16, 8] + W_out [144, 8] + B_out [144]
    assert parameter_count(hyper) == 16 * 8 * 4 + 16 * 8 + 144 * 8 + 144 == 1936
    with pytest.raises(ValueError, match="positive"):
        KernelHyperNetwork(0, 8)


def test_generated_kernel_places_each_tile_at_its_blocks() -> None:
    torch.manual_seed(0)
    hyper = KernelHyperNetwork(z_dim=4, hidden=8, tile=16)
    conv = HyperConv(hyper, in_channels=48, out_channels=32)  # 2 x 3 tiles
    with torch.no_grad():
        conv.z.zero_()
        conv.z[1 * 3 + 2] = 1.0  # output block 1, input block 2
    w = conv.weight()
    assert w.shape == (32, 48, 3, 3)
    nonzero = (w.abs().sum((2, 3)) > 0).nonzero()
    assert nonzero[:, 0].unique().tolist() == list(range(16, 32))
    assert nonzero[:, 1].unique().tolist() == list(range(32, 48))
    with pytest.raises(ValueError, match="multiples of the tile"):
        HyperConv(hyper, 1, 64)


def test_hyper_conv4_matches_conv4_shapes_with_fewer_parameters() -> None:
    torch.manual_seed(0)
    plain, hyper = Conv4(1, 64, 28), HyperConv4(1, 64, 28, z_dim=16, hyper_hidden=16)
    x = torch.randn(3, 1, 28, 28)
    assert hyper(x).shape == plain(x).shape == (3, hyper.feature_dim)
    generated = 3 * (64 * 64 * 9 + 64 + 128)  # the three plain 64 -> 64 blocks: kernel, bias, BatchNorm
    ours = 3 * (16 * 16 + 64 + 128) + (16 * 16 * 16 + 16 * 16 + 144 * 16 + 144)  # embeddings, biases, BN; hyper once
    assert parameter_count(plain) - parameter_count(hyper) == generated - ours
    # the generated kernels start at He et al.'s scale for a ReLU: std sqrt(2 / (64 * 9)) = 0.059
    w = hyper.blocks[1][0].weight()
    assert 0.6 < w.std().item() / (2 / 576) ** 0.5 < 1.6
    # every block's kernel comes from the one hypernetwork: its gradient collects all three
    hyper(x).sum().backward()
    assert hyper.hyper.w_out.grad is not None and hyper.blocks[3][0].z.grad is not None


def test_task_hypernet_starts_as_protonet_and_learns_a_different_head() -> None:
    torch.manual_seed(0)
    backbone = Conv4(1, 64, 28)
    net, proto = TaskHyperNet(backbone), ProtoNet(backbone)
    sx, qx = torch.randn(2, 10, 1, 28, 28), torch.randn(2, 6, 1, 28, 28)
    sy = torch.arange(5).repeat_interleave(2).expand(2, -1)
    a, b = net(sx, sy, qx, 5), proto(sx, sy, qx, 5)
    assert a.shape == (2, 6, 5)
    # equal up to -||f(x)||^2, the same for every class: the same softmax
    assert torch.allclose(F.log_softmax(a, -1), F.log_softmax(b, -1), atol=1e-4)
    F.cross_entropy(a.flatten(0, 1), torch.arange(12) % 5).backward()
    assert net.correction[-1].weight.grad.abs().sum() > 0  # the generator is trained, starting from g = 0
    w, bias = net.classifier(torch.randn(2, 20, 64), torch.arange(20).expand(2, -1), 20)  # any number of ways
    assert w.shape == (2, 20, 64) and bias.shape == (2, 20)
