"""Metric-based methods: shapes, the slides' invariants, and a loss that falls on real Omniglot episodes."""

from __future__ import annotations

import copy

import pytest
import torch

from metalearn.core.episodes import ClassDataset, EpisodeSampler, make_generator
from metalearn.core.models import Conv4
from metalearn.core.prototypes import prototype_logits
from metalearn.core.train import RunOptions
from metalearn.metric.episodic import Episodic, episode_scores, predictor, train_episodic
from metalearn.metric.matching_net import MatchingNet
from metalearn.metric.meta_gnn import Adjacency, GraphConv, MetaGNN
from metalearn.metric.protonet import ProtoNet
from metalearn.metric.relation_net import RelationNet
from metalearn.metric.siamese import Pairs, SiameseNet, sample_pairs, train_siamese


def _models(ways: int) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {"protonet": ProtoNet(Conv4()), "matching_net": MatchingNet(Conv4()),
            "matching_net_fce": MatchingNet(Conv4(), fce=True, read_steps=3), "relation_net": RelationNet(),
            "meta_gnn": MetaGNN(Conv4(), ways=ways), "siamese": SiameseNet(Conv4())}


@pytest.fixture(scope="module")
def small_omniglot(omniglot_train) -> ClassDataset:
    return ClassDataset(omniglot_train.images[:40], omniglot_train.class_names[:40], "omniglot/40")


@pytest.mark.parametrize("ways, shots", [(5, 1), (3, 2)])
def test_scores_shape(small_omniglot, ways, shots):
    ep = EpisodeSampler(small_omniglot, ways, shots, 4).sample(2, make_generator(0))
    for name, model in _models(ways).items():
        scores = episode_scores(model, ep)
        assert scores.shape == (2, ways * 4, ways), name
        assert torch.isfinite(scores).all(), name


def test_protonet_logits_are_negative_squared_distances(small_omniglot):
    model = ProtoNet(Conv4()).eval()
    ep = EpisodeSampler(small_omniglot, 4, 3, 2).sample(2, make_generator(1))
    with torch.no_grad():
        scores = episode_scores(model, ep)
        z_s = model.backbone(ep.support_x.flatten(0, 1)).view(2, 12, -1)
        z_q = model.backbone(ep.query_x.flatten(0, 1)).view(2, 8, -1)
    for t in range(2):
        for i in range(8):
            for k in range(4):
                proto = z_s[t, ep.support_y[t] == k].mean(0)
                assert scores[t, i, k].item() == pytest.approx(-((z_q[t, i] - proto) ** 2).sum().item(), rel=1e-4)


def test_matching_attention_sums_to_one(small_omniglot):
    ep = EpisodeSampler(small_omniglot, 5, 2, 3).sample(2, make_generator(2))
    for model in (MatchingNet(Conv4()), MatchingNet(Conv4(), fce=True, read_steps=2)):
        d = 64
        s, q = torch.randn(2, 10, d), torch.randn(2, 15, d)
        a = model.attention(s, q)
        torch.testing.assert_close(a.sum(-1), torch.ones(2, 15))
        if model.fce is not None:
            g = model.fce.embed_support(s)
            torch.testing.assert_close(model.fce.read_attention(q, g).sum(-1), torch.ones(2, 15))
        probs = episode_scores(model, ep).exp()
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 15), rtol=1e-4, atol=1e-4)


def test_matching_equals_protonet_in_one_shot_not_in_k_shot():
    """Same (squared Euclidean) distance: identical predictions with one shot, different with several."""
    torch.manual_seed(0)
    s1, q = torch.randn(50, 5, 8), torch.randn(50, 20, 8)
    y1 = torch.arange(5).expand(50, -1)
    matching = MatchingNet(Conv4(), distance="euclidean")
    p_match = matching.attention(s1, q) @ torch.nn.functional.one_hot(y1, 5).float()
    torch.testing.assert_close(p_match, torch.softmax(prototype_logits(s1, y1, q, 5), -1))
    s5 = torch.randn(50, 25, 8) * 2
    y5 = torch.arange(5).repeat_interleave(5).expand(50, -1)
    m5 = (matching.attention(s5, q) @ torch.nn.functional.one_hot(y5, 5).float()).argmax(-1)
    assert (m5 != prototype_logits(s5, y5, q, 5).argmax(-1)).any()


def test_relation_scores_in_unit_interval(small_omniglot):
    ep = EpisodeSampler(small_omniglot, 5, 5, 3).sample(2, make_generator(3))
    scores = episode_scores(RelationNet(), ep)
    assert scores.min() >= 0 and scores.max() <= 1
    assert RelationNet(in_channels=3, image_size=32)(torch.rand(1, 5, 3, 32, 32), torch.arange(5)[None],
                                                      torch.rand(1, 2, 3, 32, 32), 5).shape == (1, 2, 5)


def test_gnn_adjacency_rows_sum_to_one_without_self_loops():
    a = Adjacency(10, 16)(torch.randn(3, 6, 10))
    torch.testing.assert_close(a.sum(-1), torch.ones(3, 6))
    assert torch.all(torch.diagonal(a, dim1=1, dim2=2) == 0)
    with pytest.raises(ValueError, match="5-way"):
        MetaGNN(Conv4(), ways=5)(torch.rand(1, 3, 1, 28, 28), torch.arange(3)[None], torch.rand(1, 1, 1, 28, 28), 3)


def test_siamese_pairs(small_omniglot):
    x1, x2, same = sample_pairs(small_omniglot, 64, make_generator(0))
    assert x1.shape == (64, 1, 28, 28) and same.sum() == 32
    assert not torch.equal(x1[0], x2[0])  # same class, different drawings
    with pytest.raises(ValueError, match="even"):
        sample_pairs(small_omniglot, 3, make_generator(0))


@pytest.mark.parametrize("name", ["protonet", "matching_net", "matching_net_fce", "relation_net", "meta_gnn"])
def test_episodic_loss_falls(small_omniglot, name):
    model = _models(5)[name]
    result = train_episodic(model, EpisodeSampler(small_omniglot, 5, 1, 3), 30, Episodic(tasks=4),
                            RunOptions(seed=0, log_every=10, progress=False))
    assert result.history[-1]["loss"] < result.history[0]["loss"], result.history
    pred = predictor(model)(EpisodeSampler(small_omniglot, 5, 1, 3).sample(2, make_generator(9)))
    assert pred.shape == (2, 15) and not model.training


def test_siamese_loss_falls(small_omniglot):
    model = _models(5)["siamese"]
    result = train_siamese(model, small_omniglot, 30, Pairs(batch=32), RunOptions(seed=0, log_every=10, progress=False))
    assert result.history[-1]["loss"] < result.history[0]["loss"], result.history


def test_task_shift_formats(small_omniglot):
    from metalearn.datasets.task_shift import as_cifar_format, as_omniglot_format

    rgb = ClassDataset(torch.randint(0, 256, (3, 4, 3, 32, 32), dtype=torch.uint8), ["a", "b", "c"])
    grey = as_omniglot_format(rgb)
    assert grey.images.shape == (3, 4, 1, 28, 28) and grey.images.dtype == torch.uint8
    white = ClassDataset(torch.full((1, 2, 3, 32, 32), 255, dtype=torch.uint8), ["w"])
    assert as_omniglot_format(white).images.max() == 0  # white background -> no ink
    big = as_cifar_format(small_omniglot)
    assert big.images.shape == (40, 20, 3, 32, 32)
    assert torch.equal(big.images[:, :, 0], big.images[:, :, 2])
    with pytest.raises(ValueError, match="RGB"):
        as_omniglot_format(small_omniglot)


def test_matching_cosine_scale_sharpens_the_paper_attention():
    """s = 1 (cosine_scale=None) is the paper's softmax over cosines; the learned scale multiplies the cosines."""
    torch.manual_seed(0)
    s, q = torch.randn(3, 5, 16), torch.randn(3, 7, 16)
    cos = torch.nn.functional.cosine_similarity(q[:, :, None], s[:, None], dim=-1)
    plain = MatchingNet(Conv4(), cosine_scale=None)
    assert plain.log_scale is None
    torch.testing.assert_close(plain.attention(s, q), torch.softmax(cos, -1))
    scaled = MatchingNet(Conv4(), cosine_scale=10.0)
    a = scaled.attention(s, q)
    torch.testing.assert_close(a, torch.softmax(10 * cos, -1))
    a.max(-1).values.sum().backward()
    assert scaled.log_scale.grad is not None and scaled.log_scale.grad.abs() > 0
    assert MatchingNet(Conv4(), distance="euclidean").log_scale is None
    with pytest.raises(ValueError, match="cosine_scale must be positive"):
        MatchingNet(Conv4(), cosine_scale=0.0)


def test_embed_support_query_splits_one_batched_call():
    from metalearn.metric.episodic import embed_support_query

    torch.manual_seed(0)
    backbone = Conv4().eval()
    sx, qx = torch.rand(2, 6, 1, 28, 28), torch.rand(2, 4, 1, 28, 28)
    s, q = embed_support_query(backbone, sx, qx)
    assert s.shape == (2, 6, 64) and q.shape == (2, 4, 64)
    with torch.no_grad():
        torch.testing.assert_close(q[1, 3], backbone(qx[1, 3:4])[0])
    maps, _ = embed_support_query(RelationNet().embedding.eval(), sx, qx)
    assert maps.shape == (2, 6, 64, 5, 5)


def test_gnn_first_rows_equal_the_full_layer():
    """The last layer computes only the query node's row; it must equal that row of the full computation."""
    torch.manual_seed(0)
    layer = GraphConv(12, 5, 16, activate=False)
    x = torch.randn(4, 7, 12)
    torch.testing.assert_close(layer(x, rows=1), layer(x)[:, :1])
    torch.testing.assert_close(layer.adjacency(x, rows=3), layer.adjacency(x)[:, :3])


def test_siamese_rejects_an_odd_batch_before_training(small_omniglot):
    with pytest.raises(ValueError, match="even number"):
        train_siamese(SiameseNet(Conv4()), small_omniglot, 5, Pairs(batch=7), RunOptions(seed=0, progress=False))


def test_transductive_prediction_uses_each_tasks_own_batch_statistics(small_omniglot):
    torch.manual_seed(0)
    model = ProtoNet(Conv4())
    train_episodic(model, EpisodeSampler(small_omniglot, 5, 1, 2), 3, Episodic(), RunOptions(seed=0, progress=False))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ep = EpisodeSampler(small_omniglot, 5, 1, 3).sample(4, make_generator(1))
    trans = predictor(model, transductive=True)(ep)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # the model is untouched
    by_hand = []
    for t in range(4):  # train-mode BatchNorm on one task's support + query images at a time
        single = copy.deepcopy(model).train()
        by_hand.append(episode_scores(single, type(ep)(*(getattr(ep, f)[t:t + 1] for f in
                                                        ("support_x", "support_y", "query_x", "query_y",
                                                         "classes")))).argmax(-1))
    assert torch.equal(trans, torch.cat(by_hand))
    scores = episode_scores(model.eval(), ep)
    assert torch.equal(predictor(model)(ep), scores.argmax(-1))  # non-transductive: running statistics


def test_augmented_episodic_and_pair_training_run(small_omniglot):
    torch.manual_seed(0)
    res = train_episodic(ProtoNet(Conv4()), EpisodeSampler(small_omniglot, 5, 1, 2), 2,
                         Episodic(augment=True, cosine=True), RunOptions(seed=0, progress=False))
    assert len(res.history) == 1
    res = train_siamese(SiameseNet(Conv4()), small_omniglot, 2, Pairs(batch=8, augment=True, cosine=True),
                        RunOptions(seed=0, progress=False))
    assert len(res.history) == 1


def test_gnn_with_the_official_fc_embedding_head(small_omniglot):
    from metalearn.metric.meta_gnn import FCEmbedding

    torch.manual_seed(0)
    model = MetaGNN(FCEmbedding(Conv4(), 64), ways=5, hidden=16)
    ep = EpisodeSampler(small_omniglot, 5, 1, 2).sample(3, make_generator(0))
    assert episode_scores(model, ep).shape == (3, 10, 5) and model.backbone.feature_dim == 64
    assert isinstance(model.backbone.norm, torch.nn.BatchNorm1d) and model.backbone.fc.bias is None
