"""Few-shot molecular property prediction: scorers, multitask fine-tuning, the test protocol and its metrics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metalearn.core.train import RunOptions, Schedule
from metalearn.datasets.molecules import MoleculeTasks
from metalearn.drugs.multitask import FineTuned, LabelledPairs, MultitaskNet, fingerprint_body, train_multitask
from metalearn.drugs.property_prediction import (
    AdaptedScorer,
    FrozenBody,
    NearestNeighbours,
    PrototypeScorer,
    RandomForest,
    evaluate_tasks,
    fsmol_baselines,
    paired_tasks,
    per_task,
    summary,
    task_differences,
    task_metrics,
    wins,
)
from metalearn.gradient.inner_loop import Adaptation


def _tasks(sizes=(40, 60, 9), seed=0, bits=64) -> MoleculeTasks:
    """Random tasks whose label is the first fingerprint bit (learnable), over distinct random molecules."""
    g = torch.Generator().manual_seed(seed)
    n = sum(sizes)
    packed = torch.randint(0, 256, (n, bits // 8), generator=g, dtype=torch.uint8)
    label = (packed[:, 0] >> 7).long()
    offsets = torch.tensor([0, *np.cumsum(sizes)])
    return MoleculeTasks("toy", [f"t{i}" for i in range(len(sizes))], packed, offsets, torch.arange(n), label)


def test_metrics_of_a_perfect_and_a_reversed_ranking():
    labels = np.array([1, 0, 1, 0, 0])
    perfect = task_metrics(np.array([0.9, 0.1, 0.8, 0.2, 0.3]), labels)
    assert perfect["auprc"] == 1 and perfect["roc_auc"] == 1
    assert perfect["delta_auprc"] == pytest.approx(1 - 0.4)
    reversed_ = task_metrics(-np.array([0.9, 0.1, 0.8, 0.2, 0.3]), labels)
    assert reversed_["roc_auc"] == 0 and reversed_["delta_auprc"] < 0


def test_every_scorer_sees_the_same_draws_and_small_tasks_are_skipped():
    data = _tasks()
    seen = {"a": [], "b": []}

    def recorder(key):
        def score(sx, sy, qx):
            seen[key].append((sx.clone(), sy.clone(), qx.shape))
            return torch.rand(qx.shape[:2])
        return score

    ta = evaluate_tasks(recorder("a"), data, (8, 16), draws=3, seed=5)
    evaluate_tasks(recorder("b"), data, (8, 16), draws=3, seed=5)
    for (xa, ya, qa), (xb, yb, qb) in zip(seen["a"], seen["b"], strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and qa == qb
    assert set(ta["task"]) == {"t0", "t1"}, "a task of 9 molecules cannot give a support of 8 and 2 queries"
    assert len(ta) == 2 * 2 * 3
    first = seen["a"][0][0]
    assert not torch.equal(first[0], first[1]), "the draws of one task must differ"
    other = []
    evaluate_tasks(lambda sx, sy, qx: other.append(sx) or torch.rand(qx.shape[:2]), data, (8,), draws=1, seed=6)
    assert not torch.equal(other[0][0], first[0]), "another seed must give other draws"
    assert (ta["queries"] == ta["size"].map({8: 32, 16: 24}).where(ta["task"] == "t0", ta["size"].map(
        {8: 52, 16: 44}))).all(), "the query is the rest of the task"


def test_summary_paired_and_wins_are_over_per_task_means():
    a = pd.DataFrame({"task": ["x", "x", "y", "y", "z"], "size": [16] * 5, "draw": [0, 1, 0, 1, 0],
                      "delta_auprc": [0.2, 0.4, 0.1, 0.1, 0.5]})
    b = a.assign(delta_auprc=[0.1, 0.1, 0.2, 0.2, 0.5])
    assert per_task(a).loc[16].tolist() == pytest.approx([0.3, 0.1, 0.5])
    s = summary(a)
    assert s.loc[16, "mean"] == pytest.approx(0.3) and s.loc[16, "tasks"] == 3
    d = paired_tasks(a, b)[16]
    assert d.mean == pytest.approx((0.2 - 0.1 + 0.0) / 3) and d.n == 3
    assert wins(a, b).loc[16].tolist() == [2, 3], "x wins, z ties (counts as matching), y loses"


def test_task_differences_pair_seed_by_seed_over_the_tasks_every_seed_scores():
    def table(values, sizes=(16, 16, 16, 64)):
        return pd.DataFrame({"task": ["x", "y", "z", "x"], "size": list(sizes), "draw": [0] * 4,
                             "delta_auprc": values})
    a = {0: table([0.5, 0.2, 0.3, 0.9]), 1: table([0.4, 0.3, 0.2, 0.8])}
    b = {0: table([0.1, 0.1, 0.1, 0.1]), 1: table([0.2, 0.2, 0.2, 0.2])}
    b[1] = b[1][b[1]["task"] != "z"]  # seed 1's B skipped z: z pairs at no seed
    d = task_differences(a, b)
    assert list(d) == [16], "64 has one task: too few to pair"
    assert d[16] == pytest.approx(np.array([[0.4, 0.1], [0.2, 0.1]]))  # [seeds, tasks x and y]
    with pytest.raises(ValueError, match="same training seeds"):
        task_differences(a, {0: b[0]})


def _finetune_one(body, sx, sy, qx, steps, lr):
    """Fine-tuning of one draw with its own copy and its own Adam: the reference for the batched version."""
    copy = fingerprint_body((sx.shape[-1], 8)).double()
    copy.load_state_dict(body.state_dict())
    w = torch.zeros(8, 1, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([*copy.parameters(), w, b], lr=lr)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits((copy(sx) @ w + b).squeeze(-1), sy.double())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return torch.sigmoid((copy(qx) @ w + b).squeeze(-1))


def test_fine_tuning_draws_together_equals_fine_tuning_each_alone():
    torch.manual_seed(0)
    body = fingerprint_body((16, 8)).double()
    before = {k: v.clone() for k, v in body.state_dict().items()}
    sx, qx = torch.rand(3, 10, 16, dtype=torch.float64), torch.rand(3, 7, 16, dtype=torch.float64)
    sy = torch.randint(0, 2, (3, 10))
    together = FineTuned(5, 0.01, "all")(body)(sx, sy, qx)
    alone = torch.stack([_finetune_one(body, sx[d], sy[d], qx[d], 5, 0.01) for d in range(3)])
    assert torch.allclose(together, alone, atol=1e-10)
    assert all(torch.equal(v, before[k]) for k, v in body.state_dict().items()), "the body must not change"
    assert torch.allclose(FineTuned(0, 0.01, "head")(body)(sx, sy, qx), torch.full((3, 7), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="layers"):
        FineTuned(5, 0.01, "body")


def test_head_fine_tuning_learns_a_separable_task():
    torch.manual_seed(0)
    body = fingerprint_body((4, 16))
    x = torch.randn(1, 60, 4)
    y = (x[..., 0] > 0).long()
    p = FineTuned(200, 0.05, "head")(body)(x[:, :30], y[:, :30], x[:, 30:])
    assert task_metrics(p[0].numpy(), y[0, 30:].numpy())["roc_auc"] > 0.9


def test_nearest_neighbours_and_random_forest_on_a_copy_of_the_support():
    sx = torch.rand(2, 20, 32)
    sy = (sx[..., 0] > 0.5).long()
    knn = NearestNeighbours(1)(nn.Identity())(sx, sy, sx)
    assert torch.equal(knn, sy.float()), "a query equal to a support molecule takes its label (k = 1)"
    forest = RandomForest(trees=20)(None)(sx, sy, sx)
    assert forest.shape == (2, 20) and ((forest > 0.5).long() == sy).all()
    with pytest.raises(ValueError, match="k must be"):
        NearestNeighbours(0)


def test_adapted_scorer_without_steps_is_the_network_and_anil_adapts_only_the_head():
    torch.manual_seed(0)
    net = nn.Sequential(*fingerprint_body((16, 8)), nn.Linear(8, 2))
    sx, sy, qx = torch.rand(2, 6, 16), torch.randint(0, 2, (2, 6)), torch.rand(2, 5, 16)
    p0 = AdaptedScorer(Adaptation(steps=0, lr=0.1, inner="all", protocol="transductive"))(net)(sx, sy, qx)
    assert torch.allclose(p0, net(qx).softmax(-1)[..., 1])
    p_anil = AdaptedScorer(Adaptation(steps=1, lr=0.5, inner="head", protocol="transductive"))(net)(sx, sy, qx)
    p_all = AdaptedScorer(Adaptation(steps=1, lr=0.5, inner="all", protocol="transductive"))(net)(sx, sy, qx)
    # the head-only step by hand: one SGD step of the last layer on the frozen features
    for d in range(2):
        z = net[:-1](sx[d]).detach()
        w, b = (t.detach().clone().requires_grad_(True) for t in (net[-1].weight, net[-1].bias))
        gw, gb = torch.autograd.grad(F.cross_entropy(z @ w.T + b, sy[d]), (w, b))
        expected = (net[:-1](qx[d]) @ (w - 0.5 * gw).T + (b - 0.5 * gb)).softmax(-1)[:, 1]
        assert torch.allclose(p_anil[d], expected, atol=1e-6)
    assert not torch.allclose(p_all, p_anil), "adapting every layer must differ from adapting the head"


def test_multitask_net_uses_each_rows_own_head_and_learns():
    data = _tasks(sizes=(200, 200), bits=16)
    net = MultitaskNet(fingerprint_body((16, 8)), len(data))
    with torch.no_grad():
        net.head_bias[:] = torch.tensor([3.0, -3.0])
    x = torch.rand(4, 16)
    assert (net(x, torch.tensor([0, 0, 1, 1])) - net.head_bias.new_tensor([3, 3, -3, -3])).abs().max() < 1e-6
    pairs = LabelledPairs(data, 64)
    xb, tb, yb = pairs.sample(torch.Generator().manual_seed(0))
    assert xb.shape == (64, 16) and ((xb[:, 0] == 1).long() == yb).all(), "each pair keeps its molecule's label"
    res = train_multitask(MultitaskNet(fingerprint_body((16, 8)), 2), pairs, 150, Schedule(lr=0.01),
                          RunOptions(seed=0, progress=False, log_every=50))
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]
    with pytest.raises(ValueError, match="task heads"):
        train_multitask(MultitaskNet(fingerprint_body((16, 8)), 3), pairs, 1, Schedule(), RunOptions(seed=0))


def test_fsmol_baselines_from_the_authors_files():
    """The FS-Mol authors' per-task results, read from the mirror: 157 test tasks (43 at 256)."""
    ref = fsmol_baselines()
    counts = ref[ref["method"] == "protonet"].groupby("size")["task"].nunique()
    assert counts.loc[16] == 157 and counts.loc[256] == 43
    mean = ref.groupby(["method", "size"])["delta_auprc"].mean()
    assert mean.loc[("protonet", 16)] > mean.loc[("maml", 16)] > mean.loc[("random_forest", 16)] > 0


def test_frozen_body_scorers_embed_each_task_once_and_score_as_on_fingerprints():
    """ProtoNet, k-NN and ANIL score the embeddings of a task's molecules computed once for every size and draw; the
    table equals scoring each draw's fingerprints, and a wrong embedding would change it."""
    from metalearn.metric.protonet import ProtoNet

    data = _tasks(sizes=(40, 60, 9, 300), bits=64)
    torch.manual_seed(0)
    net = nn.Sequential(*fingerprint_body((64, 16)), nn.Linear(16, 2)).double()
    scorers = {"protonet": PrototypeScorer()(ProtoNet(net[:-1])), "knn": NearestNeighbours(3)(net[:-1]),
               "anil": AdaptedScorer(Adaptation(steps=2, lr=0.3, inner="head", protocol="transductive"))(net)}
    data.features = lambda m, f=data.features: f(m).double()  # float64: the two paths agree to rounding
    for name, scorer in scorers.items():
        assert isinstance(scorer, FrozenBody), name
        calls = []
        counted = FrozenBody(lambda x, e=scorer.embed, c=calls: c.append(len(x)) or e(x), scorer.score)
        fast = evaluate_tasks(counted, data, (8, 16), draws=3, seed=2, embed_chunk=128)
        slow = evaluate_tasks(lambda sx, sy, qx, s=scorer: s(sx, sy, qx), data, (8, 16), draws=3, seed=2)
        assert calls == [40, 60, 128, 128, 44], f"{name}: one embedding per task (9 molecules: too small), chunked"
        pd.testing.assert_frame_equal(fast, slow, check_exact=False, rtol=1e-9)
        shifted = FrozenBody(lambda x, e=scorer.embed: e(x) + torch.randn_like(e(x)), scorer.score)
        other = evaluate_tasks(shifted, data, (8, 16), draws=3, seed=2)
        assert not np.allclose(other["auprc"], slow["auprc"]), f"{name}: the embedding must matter"
    with pytest.raises(ValueError, match="embed_chunk"):
        evaluate_tasks(scorers["knn"], data, (8,), embed_chunk=0)


def test_half_precision_storage_moves_delta_auprc_and_roc_auc_by_less_than_0001():
    """The model store keeps weights in float16: on FS-Mol test assays, a chapter-13 MLP (2048-512-128, trained a
    little on FS-Mol training assays) scores the same to 0.001 in ΔAUPRC and ROC-AUC before and after rounding."""
    import copy

    from metalearn.core.model_store import half_state
    from metalearn.datasets.molecules import load_fsmol

    train, test = load_fsmol("train", max_tasks=30), load_fsmol("test", max_tasks=6)
    torch.manual_seed(0)
    model = MultitaskNet(fingerprint_body((2048, 512, 128)), len(train))
    train_multitask(model, LabelledPairs(train, 64), 150, Schedule(lr=1e-3), RunOptions(seed=0, progress=False))
    rounded = copy.deepcopy(model)
    rounded.load_state_dict(half_state(model.state_dict()))
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), rounded.parameters(), strict=True))
    tables = [evaluate_tasks(FineTuned(10, 0.01, "head")(m), test, (16, 64), draws=3, seed=0) for m in (model, rounded)]
    for metric in ("delta_auprc", "roc_auc"):
        assert abs(tables[0][metric].mean() - tables[1][metric].mean()) < 1e-3, metric
        assert (tables[0][metric] - tables[1][metric]).abs().max() < 1e-2, metric  # no assay moves by much either
