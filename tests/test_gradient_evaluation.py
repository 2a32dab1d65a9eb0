"""The one evaluator of the gradient-based chapters: it computes what the code it replaced computed (the per-episode
loop of chapters 09, 10 and 12, and Reptile's own evaluation, which adapted on minibatches of the support set), in
float64, and reads every row from one seeded pass over the episodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metalearn.core.batchnorm import batch_statistics
from metalearn.core.episodes import Episode, EpisodeSampler, make_generator
from metalearn.core.models import Classifier, conv4_for, mlp
from metalearn.gradient import lean
from metalearn.gradient.evaluation import Adapted, adapted_predictor, evaluate, first_queries
from metalearn.gradient.inner_loop import Adaptation, adapt, inner_names, query_outputs
from metalearn.gradient.networks import StridedConv4, finn_network
from metalearn.gradient.reptile import reptile_direction

RULES = {
    "maml": Adaptation(steps=3, lr=0.4, inner="no_norms", protocol="transductive"),
    "anil": Adaptation(steps=3, lr=0.4, inner="head", protocol="transductive"),
    "reptile": Adaptation(steps=5, lr=0.2, inner="all", protocol="nichol", minibatch=4),  # 4 < 10 support images
    "reptile_whole": Adaptation(steps=2, lr=0.2, inner="all", protocol="nichol", minibatch=25),  # >= the support
}


def replaced_loop(model: torch.nn.Module, rule: Adaptation, support_x: torch.Tensor, support_y: torch.Tensor,
                  query_x: torch.Tensor, views: list) -> list[torch.Tensor]:
    """The evaluation the one evaluator replaced, restated: each episode adapted on its own (full batch: ``adapt`` of
    the rule's parameters; Nichol's minibatches: θ plus Reptile's direction on a task made of the support set, as
    chapter 11's own evaluation did), then each view's queries under its BatchNorm protocol."""
    names = inner_names(model, rule.inner) or [n for n, _ in model.named_parameters()]
    outputs: list[list[torch.Tensor]] = [[] for _ in views]
    for sx, sy, qx in zip(support_x, support_y, query_x, strict=True):
        theta = {n: p.detach().requires_grad_(n in names) for n, p in model.named_parameters()}
        with batch_statistics(model):
            if rule.minibatch is None:
                adapted = adapt(model, theta, sx, sy, steps=rule.steps, inner_lr=rule.lr, first_order=True,
                                names=names)
            else:
                empty = sy[None, :0]
                task = Episode(sx[None], sy[None], sx[None, :0], empty, classes=empty)
                direction, _ = reptile_direction(model, task, inner_steps=rule.steps, inner_lr=rule.lr,
                                                 inner_batch=rule.minibatch)
                adapted = {n: (theta[n] + direction[n]).detach() for n in theta}
        with torch.no_grad():
            for out, (protocol, index) in zip(outputs, views, strict=True):
                out.append(query_outputs(model, adapted, sx, qx[index], protocol))
    return [torch.stack(o) for o in outputs]


def _net(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    body = {"strided": StridedConv4(1, 8), "maxpool": conv4_for((1, 28, 28), hidden=8)}[kind]
    return Classifier(body, 5).double()


def _tasks(tasks: int = 3, shots: int = 2, queries: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    sx = torch.rand(tasks, 5 * shots, 1, 28, 28, generator=g, dtype=torch.float64)
    qx = torch.rand(tasks, 5 * queries, 1, 28, 28, generator=g, dtype=torch.float64)
    sy = torch.arange(5).repeat_interleave(shots).expand(tasks, -1).contiguous()
    return sx, sy, qx


@pytest.mark.parametrize("kind", ["strided", "maxpool"])
@pytest.mark.parametrize("rule", list(RULES))
def test_adapted_computes_what_the_replaced_loop_computed_in_float64(kind: str, rule: str) -> None:
    model, r = _net(kind), RULES[rule]
    sx, sy, qx = _tasks()
    views = [("nichol", first_queries(5, 3, 1)), ("transductive", first_queries(5, 3, 2)),
             ("transductive", slice(None))]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    learner = Adapted(model, r)
    assert learner.path(sx) == "lean"
    torch.manual_seed(7)
    ref = replaced_loop(model, r, sx, sy, qx, views)
    paths = {"views (lean, in workers)": learner.views, "views_per_task": learner.views_per_task,
             "lean in this process": lambda *a: lean.adapted_views(model, r, *a)}
    if r.minibatch is None:
        paths["views_batched (a GPU's path)"] = learner.views_batched
    for name, run in paths.items():
        torch.manual_seed(7)
        ours = run(sx, sy, qx, views)
        for a, b in zip(ours, ref, strict=True):
            assert a.shape == b.shape and torch.allclose(a, b, rtol=1e-10, atol=1e-10), (name, (a - b).abs().max())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the network is not modified
    assert not any(p.is_shared() for p in model.parameters())  # nor moved to shared memory by the workers
    if rule == "reptile":  # another order of minibatches: another adaptation (the seed is really used)
        torch.manual_seed(8)
        other = Adapted(model, r).views(sx, sy, qx, views[2:])[0]
        assert not torch.allclose(other, ref[2], atol=1e-6)


def test_an_mlp_and_its_head_adapt_as_before() -> None:
    torch.manual_seed(0)
    model = mlp([6, 8, 3]).double()
    sx, qx = torch.randn(2, 6, 6, dtype=torch.float64), torch.randn(2, 4, 6, dtype=torch.float64)
    sy = torch.tensor([0, 1, 2, 0, 1, 2]).expand(2, -1).contiguous()
    for inner in ("all", "head"):
        rule = Adaptation(steps=2, lr=0.3, inner=inner, protocol="transductive")
        ours = Adapted(model, rule)(sx, sy, qx)
        ref = replaced_loop(model, rule, sx, sy, qx, [("transductive", slice(None))])[0]
        assert torch.allclose(ours, ref, rtol=1e-10, atol=1e-12)


def test_evaluate_reads_every_row_from_one_seeded_pass(omniglot_test) -> None:
    """Reptile's rows as its chapter scored them (episodes of K queries per class; Nichol's row on the first query of
    each class, the transductive one on all K; minibatch orders seeded with the evaluation's seed), and the caller's
    random state untouched."""
    torch.manual_seed(0)
    model = finn_network("omniglot", (1, 28, 28), 5, hidden=8)
    rule = Adaptation(steps=4, lr=0.3, inner="all", protocol="nichol", minibatch=5)
    state = torch.get_rng_state()
    rows = evaluate(model, rule, omniglot_test, 5, 5, test_queries=None, shared_queries=None, episodes=4, seed=3,
                    tasks_per_batch=3)
    assert torch.equal(state, torch.get_rng_state())
    assert set(rows) == {"", "_transductive"} and all(len(v) == 4 for v in rows.values())
    sampler = EpisodeSampler(omniglot_test, 5, 5, 5)
    g = make_generator(3)
    eps = [sampler.sample(3, g), sampler.sample(1, g)]
    torch.manual_seed(3)
    nichol, transductive = [], []
    for ep in eps:
        first = first_queries(5, 5, 1)
        out = replaced_loop(model, rule, ep.support_x, ep.support_y, ep.query_x,
                            [("nichol", first), ("transductive", slice(None))])
        nichol.append((out[0].argmax(-1) == ep.query_y[:, first]).double().mean(1) * 100)
        transductive.append((out[1].argmax(-1) == ep.query_y).double().mean(1) * 100)
    assert np.array_equal(rows[""], torch.cat(nichol).numpy())
    assert np.array_equal(rows["_transductive"], torch.cat(transductive).numpy())
    shared = evaluate(model, rule, omniglot_test, 5, 5, test_queries=None, shared_queries=6, episodes=2, seed=3)
    assert set(shared) == {"", "_transductive", "_transductive_6q"}
    # the rows read one pass over episodes of 6 queries per class: 1, 5 and 6 of them scored
    ep6 = EpisodeSampler(omniglot_test, 5, 5, 6).sample(2, make_generator(3))
    torch.manual_seed(3)
    views = [("nichol", first_queries(5, 6, 1)), ("transductive", first_queries(5, 6, 5)), ("transductive", slice(None))]
    out = replaced_loop(model, rule, ep6.support_x, ep6.support_y, ep6.query_x, views)
    for suffix, o, (_, index) in zip(("", "_transductive", "_transductive_6q"), out, views, strict=True):
        expected = (o.argmax(-1) == ep6.query_y[:, index]).double().mean(1) * 100
        assert np.array_equal(shared[suffix], expected.numpy()), suffix
    assert out[0].shape[1] == 5 and out[1].shape[1] == 25 and out[2].shape[1] == 30
    with pytest.raises(ValueError, match="episodes >= 2"):
        evaluate(model, rule, omniglot_test, 5, 5, test_queries=None, shared_queries=None, episodes=1, seed=3)


def test_the_validation_predictor_is_named_by_its_rule_and_repeatable(omniglot_test) -> None:
    a = adapted_predictor(RULES["reptile"])
    b = adapted_predictor(Adaptation(steps=5, lr=0.1, inner="all", protocol="nichol", minibatch=4))
    assert a.__qualname__ != b.__qualname__ and "lr=0.2" in a.__qualname__
    torch.manual_seed(0)
    model = finn_network("omniglot", (1, 28, 28), 5, hidden=8)
    ep = EpisodeSampler(omniglot_test, 5, 5, 2).sample(2, make_generator(0))
    first = a(model)(ep)
    torch.manual_seed(123)  # the run's random state does not change a check
    assert torch.equal(first, a(model)(ep))


def test_the_paths_are_chosen_by_device_network_and_rule() -> None:
    conv, mlp_net = _net("strided"), mlp([6, 8, 3]).double()
    full, mini = RULES["maml"], RULES["reptile"]
    cpu = torch.zeros(3, 10, 1, 28, 28)
    assert Adapted(conv, full).path(cpu) == Adapted(conv, mini).path(cpu) == "lean"
    assert lean.plan(conv, 3, "cpu") == "workers" and lean.plan(conv, 1, "cpu") == "loop"
    assert lean.plan(mlp_net, 3, "cpu") == "loop"  # not measured without convolutions: this process
    assert lean.plan(conv, 3, "cuda") == "loop"
    assert lean.can_send(torch.nn.functional.cross_entropy) and not lean.can_send(lambda out, y: out.sum())
    with pytest.raises(ValueError, match="loss function that pickles"), lean.Workers(1) as workers:
        lean.adapted_views(conv, full, *_tasks()[:2], _tasks()[2], [("transductive", slice(None))],
                           loss_fn=lambda out, y: out.sum(), workers=workers)
    reflect = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding_mode="reflect"), torch.nn.Flatten(),
                                  torch.nn.Linear(2 * 26 * 26, 5))
    with pytest.raises(ValueError, match="does not support"):  # an option the functional layers would ignore
        lean.LeanNet(reflect)
    assert Adapted(reflect, RULES["anil"]).path(cpu) == "loop"


def test_one_network_definition_with_the_papers_filters() -> None:
    omniglot = finn_network("omniglot", (1, 28, 28), 5)
    cifar = finn_network("cifar_fs", (3, 32, 32), 5)
    assert isinstance(omniglot.backbone, StridedConv4) and omniglot.head.in_features == 64
    assert cifar.backbone.blocks[0][0].out_channels == 32 and cifar.head.in_features == 32 * 2 * 2
    with pytest.raises(ValueError, match="no gradient-based network for data set 'mini'"):
        finn_network("mini", (3, 84, 84), 5)


def test_the_engine_benchmark_compares_side_by_side(omniglot_test) -> None:
    """The benchmark (``python -m metalearn.study.adaptation_benchmark``) at a tiny size: every engine timed in the
    same rounds, the lean ones checked against the lib's loop in float64, the FLOP efficiency against the reference
    convolution of the same run. Its speed is not asserted: a timed test on a shared machine would flake."""
    from metalearn.study.adaptation_benchmark import compare

    table = compare({"omniglot": omniglot_test}, (("omniglot", 5, 1),), {("omniglot", 5, 1): 2}, rounds=1, warmup=0,
                    steps=1, queries=2)
    assert {"lib", "task-batched", "lean loop"} <= set(table.engine)
    lean = table[table.engine.str.startswith("lean")]
    assert (lean["float64 max |diff|"] < 1e-10).all()
    assert (table["speed-up"] > 0).all() and (table["FLOP efficiency"] > 0).all()
    assert table.loc[table.engine == "lib", "speed-up"].item() == 1.0
