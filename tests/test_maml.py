"""MAML, FOMAML, ANIL and Reptile: meta-gradients against independent references in float64."""

from __future__ import annotations

import copy
import re
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from metalearn.core.batchnorm import batch_statistics
from metalearn.core.episodes import Episode, EpisodeSampler, make_generator
from metalearn.core.models import Classifier, conv4_for
from metalearn.core.train import RunOptions
from metalearn.gradient.evaluation import Adapted
from metalearn.gradient.inner_loop import (
    Adaptation,
    adapt,
    head_names,
    parameters,
    query_outputs,
    without_norms,
)
from metalearn.gradient.maml import train_maml
from metalearn.gradient.networks import StridedConv4
from metalearn.gradient.outer_loop import MetaTraining, meta_loss
from metalearn.gradient.regression import (
    SinusoidSampler,
    adapted_mse,
    choose_inner_lr,
    sinusoid_eval_tasks,
    sinusoid_mlp,
    task_mse,
)
from metalearn.gradient.reptile import ReptileTraining, joint_gradient, reptile_direction, train_reptile
from metalearn.gradient.task_batched import batched_meta_loss, parallel_meta_loss
from metalearn.study.maml_benchmark import IMPLEMENTATIONS, check_gradients, compare, step_flops

WAYS, SHOTS, QUERIES, TASKS = 5, 1, 3, 2


def conv_net() -> nn.Module:
    """A small Conv-4 (8 filters, BatchNorm) with a 5-way head, in float64."""
    torch.manual_seed(0)
    return Classifier(conv4_for((1, 28, 28), hidden=8), WAYS).double()


def episode(seed: int = 0) -> Episode:
    """Random float64 images (every pixel noisy, so no ReLU or max-pool sits on a tie) in 5-way 1-shot tasks."""
    g = make_generator(seed)
    labels = torch.arange(WAYS)
    return Episode(support_x=torch.rand(TASKS, WAYS * SHOTS, 1, 28, 28, generator=g, dtype=torch.float64),
                   support_y=labels.repeat_interleave(SHOTS).expand(TASKS, -1),
                   query_x=torch.rand(TASKS, WAYS * QUERIES, 1, 28, 28, generator=g, dtype=torch.float64),
                   query_y=labels.repeat_interleave(QUERIES).expand(TASKS, -1),
                   classes=labels.expand(TASKS, -1))


def ours(model: nn.Module, ep: Episode, **kw: object) -> dict[str, torch.Tensor]:
    model.zero_grad()
    loss, _ = meta_loss(model, ep, **kw)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def without_running_stats(model: nn.Module) -> nn.Module:
    """A copy whose BatchNorm layers keep no running statistics (same train-mode outputs; torch.func-friendly)."""
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats, m.running_mean, m.running_var, m.num_batches_tracked = False, None, None, None
    return model


def reference(model: nn.Module, ep: Episode, inner_steps: int, inner_lr: float) -> dict[str, torch.Tensor]:
    """The second-order meta-gradient written independently with torch.func.grad (a grad of a grad)."""
    model = without_running_stats(model)

    def task_loss(params: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(model, params, (x,)), y)

    def outer(theta: dict) -> torch.Tensor:
        total = 0.0
        for t in range(TASKS):
            p = theta
            for _ in range(inner_steps):
                g = torch.func.grad(task_loss)(p, ep.support_x[t], ep.support_y[t])
                p = {n: p[n] - inner_lr * g[n] for n in p}
            total = total + task_loss(p, ep.query_x[t], ep.query_y[t])
        return total / TASKS

    return torch.func.grad(outer)({n: p.detach() for n, p in model.named_parameters()})


def max_rel_error(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    num = max((a[n] - b[n]).abs().max().item() for n in a)
    return num / max(b[n].abs().max().item() for n in b)


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_second_order_meta_gradient_equals_a_torch_func_reference(inner_steps: int) -> None:
    model, ep = conv_net(), episode()
    got = ours(model, ep, inner_steps=inner_steps, inner_lr=0.4)
    want = reference(model, ep, inner_steps, 0.4)
    assert max_rel_error(got, want) < 1e-6


def test_second_order_meta_gradient_matches_finite_differences() -> None:
    model, ep = conv_net(), episode(1)
    grads = ours(model, ep, inner_steps=1, inner_lr=0.4)
    g = make_generator(7)
    direction = {n: torch.randn(p.shape, generator=g, dtype=torch.float64) for n, p in model.named_parameters()}
    norm = sum(d.pow(2).sum() for d in direction.values()).sqrt()
    direction = {n: d / norm for n, d in direction.items()}

    def loss_at(eps: float) -> float:
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.add_(eps * direction[n])
        loss = meta_loss(model, ep, inner_steps=1, inner_lr=0.4)[0].item()
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.sub_(eps * direction[n])
        return loss

    eps = 1e-6
    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    analytic = sum((grads[n] * direction[n]).sum() for n in grads).item()
    assert abs(numeric - analytic) <= 1e-6 * abs(analytic)


def test_fomaml_is_maml_without_the_hessian_term() -> None:
    """One inner step: ∇_θ L_Q(θ') = (I − α H_S(θ)) g', g' = ∇L_Q at θ'. FOMAML keeps g' and drops −α H_S g'."""
    model, ep, lr = conv_net(), episode(2), 0.4
    maml = ours(model, ep, inner_steps=1, inner_lr=lr)
    fomaml = ours(model, ep, inner_steps=1, inner_lr=lr, first_order=True)
    theta = parameters(model)
    query_grad, hessian_term = {n: 0.0 for n in theta}, {n: 0.0 for n in theta}
    for t in range(TASKS):
        adapted = adapt(model, theta, ep.support_x[t], ep.support_y[t], steps=1, inner_lr=lr, first_order=True)
        adapted = {n: p.detach().requires_grad_() for n, p in adapted.items()}
        q_loss = F.cross_entropy(functional_call(model, adapted, (ep.query_x[t],)), ep.query_y[t])
        g_prime = dict(zip(adapted, torch.autograd.grad(q_loss, list(adapted.values())), strict=True))
        s_loss = F.cross_entropy(functional_call(model, theta, (ep.support_x[t],)), ep.support_y[t])
        s_grad = torch.autograd.grad(s_loss, list(theta.values()), create_graph=True)
        hvp = torch.autograd.grad(sum((g * g_prime[n]).sum() for n, g in zip(theta, s_grad, strict=True)),
                                  list(theta.values()))
        for (n, h) in zip(theta, hvp, strict=True):
            query_grad[n] = query_grad[n] + g_prime[n] / TASKS
            hessian_term[n] = hessian_term[n] - lr * h / TASKS
    assert max_rel_error(fomaml, query_grad) < 1e-10
    assert max_rel_error({n: maml[n] - fomaml[n] for n in maml}, hessian_term) < 1e-6
    assert max(hessian_term[n].abs().max().item() for n in theta) > 1e-3  # the dropped term is not negligible


def test_anil_adapts_only_the_head_and_still_meta_learns_the_body() -> None:
    model, ep = conv_net(), episode(3)
    head = head_names(model)
    assert head == ["head.weight", "head.bias"]
    theta = parameters(model)
    adapted = adapt(model, theta, ep.support_x[0], ep.support_y[0], steps=2, inner_lr=0.4, names=head)
    assert all(adapted[n] is theta[n] for n in theta if n not in head)
    assert all(not torch.equal(adapted[n], theta[n]) for n in head)
    grads = ours(model, ep, inner_steps=1, inner_lr=0.4, names=head)
    assert grads["backbone.blocks.0.0.weight"].abs().max() > 0


def test_reptile_with_one_step_is_joint_training() -> None:
    """k = 1: (1/n) Σ (θ̃ − θ) = −α ∇ (1/n) Σ L_τ(θ), the gradient of the expected loss; k > 1 differs."""
    model, ep, lr = conv_net(), episode(4), 0.1
    direction, _ = reptile_direction(model, ep, inner_steps=1, inner_lr=lr)
    joint = sum(F.cross_entropy(model(torch.cat([ep.support_x[t], ep.query_x[t]])),
                                torch.cat([ep.support_y[t], ep.query_y[t]])) for t in range(TASKS)) / TASKS
    want = dict(zip(parameters(model), torch.autograd.grad(joint, list(model.parameters())), strict=True))
    assert max_rel_error(joint_gradient(model, ep), want) < 1e-12
    assert max_rel_error(direction, {n: -lr * g for n, g in want.items()}) < 1e-6
    two, _ = reptile_direction(model, ep, inner_steps=2, inner_lr=lr)
    assert max_rel_error(two, {n: -2 * lr * g for n, g in want.items()}) > 1e-3


def test_reptile_with_adam_and_one_step_takes_the_joint_training_step() -> None:
    """With ``outer="adam"`` and k = 1, Reptile's first update is Adam's first step on the joint loss: Adam on α g
    with eps is exactly Adam on g with eps / α. A bad ``outer`` is refused before any work."""
    model, ep, lr, alpha = conv_net(), episode(4), 1e-3, 0.1

    class Fixed:
        examples_per_task = 1

        def sample(self, tasks: int, generator: torch.Generator) -> Episode:
            return ep

    joint_model = copy.deepcopy(model)
    train_reptile(model, Fixed(), 1, ReptileTraining(tasks=TASKS, inner_steps=1, inner_lr=alpha, lr=lr, outer="adam",
                                                     anneal=False), RunOptions(seed=0, progress=False))
    opt = torch.optim.Adam(joint_model.parameters(), lr=lr, eps=1e-8 / alpha)
    joint_model.train()
    joint = sum(F.cross_entropy(joint_model(torch.cat([ep.support_x[t], ep.query_x[t]])),
                                torch.cat([ep.support_y[t], ep.query_y[t]])) for t in range(TASKS)) / TASKS
    joint.backward()
    opt.step()
    for (n, a), b in zip(model.named_parameters(), joint_model.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-6 * lr), n  # conv biases before BatchNorm: g = 0 up to rounding
    with pytest.raises(ValueError, match="outer"):
        train_reptile(model, Fixed(), 1, ReptileTraining(tasks=TASKS, inner_steps=1, inner_lr=0.1, lr=1.0,
                                                         outer="rmsprop"), RunOptions(seed=0, progress=False))


def test_batch_statistics_is_training_batchnorm_per_group_without_running_statistics() -> None:
    """Inside ``batch_statistics``, a group's outputs equal a training-mode forward of that group alone, gradients
    flow, and the running statistics are neither read nor moved."""
    model, ep = conv_net(), episode(5)
    model.train()
    for _ in range(3):  # running statistics that differ from any one batch
        model(ep.query_x[0])
    before = copy.deepcopy(model.state_dict())
    x = ep.query_x[0]  # 15 images: 3 groups of 5
    with batch_statistics(model, groups=3):
        out = model(x)
        assert not model.training
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    for g in range(3):
        torch.testing.assert_close(out[5 * g:5 * (g + 1)], copy.deepcopy(model).train()(x[5 * g:5 * (g + 1)]))
    with batch_statistics(model):
        torch.autograd.grad(model(x).sum(), model.head.weight)
    with pytest.raises(ValueError, match="equal groups"), batch_statistics(model, groups=4):
        model(x)


def test_adapted_protocols_nichol_and_transductive() -> None:
    """Nichol et al.'s protocol: each query normalised with the support set plus itself, so a query's prediction does
    not depend on the other queries; transductive: the query batch's statistics. Neither modifies the model."""
    model, ep = conv_net(), episode(5)
    before = copy.deepcopy(model.state_dict())
    learner = Adapted(model, Adaptation(steps=2, lr=0.4, inner="all", protocol="nichol"))
    everything = slice(None)
    nichol, transductive = learner.views(ep.support_x, ep.support_y, ep.query_x,
                                         [("nichol", everything), ("transductive", everything)])
    assert nichol.shape == transductive.shape == (TASKS, WAYS * QUERIES, WAYS)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the same numbers from an independent route: adapt a training-mode copy, then one forward pass per query
    for t in range(TASKS):
        copy_ = copy.deepcopy(model).train()
        theta = {n: p.detach().requires_grad_() for n, p in copy_.named_parameters()}
        adapted = adapt(copy_, theta, ep.support_x[t], ep.support_y[t], steps=2, inner_lr=0.4, first_order=True)
        with torch.no_grad():
            torch.testing.assert_close(transductive[t], functional_call(copy_, adapted, (ep.query_x[t],)))
            for j in range(WAYS * QUERIES):
                x = torch.cat([ep.support_x[t], ep.query_x[t, j:j + 1]])
                torch.testing.assert_close(nichol[t, j], functional_call(copy_, adapted, (x,))[-1])
    noisy = ep.query_x.clone()
    noisy[:, 1:] = torch.rand_like(noisy[:, 1:])  # other queries change; the first query's logits must not
    torch.testing.assert_close(learner(ep.support_x, ep.support_y, noisy, WAYS)[:, 0], nichol[:, 0])
    assert not torch.allclose(Adapted(model, Adaptation(steps=2, lr=0.4, inner="all", protocol="transductive"))(
        ep.support_x, ep.support_y, noisy, WAYS)[:, 0], transductive[:, 0])
    chunked = query_outputs(model, parameters(model), ep.support_x[0], ep.query_x[0], "nichol", chunk=7)
    torch.testing.assert_close(chunked, query_outputs(model, parameters(model), ep.support_x[0], ep.query_x[0],
                                                      "nichol"))
    with pytest.raises(ValueError, match="20-way"):
        learner(ep.support_x, ep.support_y, ep.query_x, 20)
    with pytest.raises(ValueError, match="running"):
        Adaptation(steps=2, lr=0.4, inner="all", protocol="running")
    with pytest.raises(ValueError, match="running"):
        learner.views(ep.support_x, ep.support_y, ep.query_x, [("running", everything)])


@pytest.mark.parametrize("protocol", ["nichol", "transductive"])
def test_meta_steps_give_identical_predictions(protocol: str) -> None:
    """The loop, task-batched and task-parallel meta-steps move BatchNorm's running statistics differently, but no
    protocol reads them: after the same meta-training, the predictions agree."""
    ep = episode(9)

    class Fixed:
        examples_per_task = 1

        def sample(self, tasks: int, generator: torch.Generator) -> Episode:
            return ep

    predictions = {}
    for meta_step in ("loop", "batched", "parallel"):
        model = conv_net()
        train_maml(model, Fixed(), 3, MetaTraining(tasks=TASKS, inner_steps=1, inner_lr=0.4, inner="all",
                                                   meta_step=meta_step), RunOptions(seed=0, progress=False))
        predictions[meta_step] = Adapted(model, Adaptation(steps=2, lr=0.4, inner="all", protocol=protocol))(
            ep.support_x, ep.support_y, ep.query_x)
    torch.testing.assert_close(predictions["batched"], predictions["loop"], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(predictions["parallel"], predictions["loop"], rtol=1e-9, atol=1e-9)


def test_finn_inner_loop_leaves_batchnorm_parameters_to_the_outer_loop() -> None:
    model = conv_net()
    names = without_norms(model)
    assert "backbone.blocks.0.0.weight" in names and "head.bias" in names
    assert not any(re.fullmatch(r"backbone\.blocks\.\d\.1\.(weight|bias)", n) for n in names)  # BatchNorm
    assert len(names) == len(list(model.parameters())) - 8


@pytest.mark.parametrize("bad, match", [(dict(inner_steps=-1), "inner_steps"), (dict(inner_lr=0.0), "inner_lr"),
                                        (dict(inner="body"), "inner must be one of"),
                                        (dict(meta_step="vmap"), "meta_step")])
def test_bad_inner_loop_settings_are_refused_before_training(bad: dict, match: str) -> None:
    kw = dict(tasks=2, inner_steps=1, inner_lr=0.4, inner="all") | bad
    with pytest.raises(ValueError, match=match):
        train_maml(conv_net(), SinusoidSampler(5, 5), 1, MetaTraining(**kw), RunOptions(seed=0, progress=False))


def test_maml_learns_to_adapt_on_sinusoids() -> None:
    """A short MAML run beats its own initialisation at 5-shot, 1-step adaptation."""
    torch.manual_seed(0)
    model = sinusoid_mlp()
    before = adapted_mse(model, 5, (1,), tasks=100)[1][0]
    res = train_maml(model, SinusoidSampler(10, 10), 1000,
                     MetaTraining(tasks=5, inner_steps=1, inner_lr=0.01, inner="all", lr=3e-3, regression=True),
                     RunOptions(seed=0, progress=False))
    after = adapted_mse(model, 5, (1,), tasks=100)[1][0]
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert after < 0.7 * before



def test_per_task_sinusoid_mse_averages_to_adapted_mse() -> None:
    """task_mse's column k is each test task's query MSE after k steps: its means are adapted_mse's, its first column
    is the unadapted model's MSE, and k steps taken at once give the same column."""
    torch.manual_seed(0)
    model = sinusoid_mlp()
    before = [p.detach().clone() for p in model.parameters()]
    tasks = sinusoid_eval_tasks(5, 40, seed=3)
    mse = task_mse(model, tasks, 10, inner_lr=0.02)
    assert mse.shape == (40, 11)
    for k, (mean, _) in adapted_mse(model, 5, (0, 1, 5, 10), inner_lr=0.02, tasks=40, seed=3).items():
        assert mse[:, k].mean() == pytest.approx(mean, rel=1e-12)
    with torch.no_grad():
        assert mse[:, 0] == pytest.approx(((model(tasks.query_x) - tasks.query_y) ** 2).mean((1, 2)).numpy(), rel=1e-6)
    params = {n: p.detach().requires_grad_() for n, p in model.named_parameters()}
    five = adapt(model, params, tasks.support_x[7], tasks.support_y[7], steps=5, inner_lr=0.02, first_order=True,
                 loss_fn=F.mse_loss)
    with torch.no_grad():
        assert mse[7, 5] == F.mse_loss(functional_call(model, five, (tasks.query_x[7],)), tasks.query_y[7]).item()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_inner_lr_chosen_on_training_tasks_avoids_a_diverging_step_size() -> None:
    """A step size far past SGD's stability bound blows up tasks; the choice on training tasks is the one with the
    lowest mean MSE after the last step, and its record is task_mse's on those tasks."""
    torch.manual_seed(0)
    model = sinusoid_mlp()
    chosen, table = choose_inner_lr(model, [0.01, 0.3], shots=5, steps=10, tasks=20, seed=11)
    by_lr = {r["inner lr"]: r for r in table}
    assert chosen == 0.01
    assert by_lr[0.3]["diverged"] > 0 and by_lr[0.3]["mean"] > 10 * by_lr[0.01]["mean"]
    mse = task_mse(model, sinusoid_eval_tasks(5, 20, seed=11), 10, inner_lr=0.01)
    assert by_lr[0.01]["mean"] == pytest.approx(mse[:, -1].mean(), rel=1e-12)
    with pytest.raises(ValueError, match="step sizes > 0"):
        choose_inner_lr(model, [], shots=5, steps=10, seed=11)


def test_reptile_learns_an_initialisation_that_adapts_on_sinusoids() -> None:
    torch.manual_seed(0)
    model = sinusoid_mlp()
    before = adapted_mse(model, 10, (5,), inner_lr=0.02, tasks=100)[5][0]
    train_reptile(model, SinusoidSampler(10, 10), 1000,
                  ReptileTraining(tasks=5, inner_steps=5, inner_lr=0.02, lr=1.0, regression=True),
                  RunOptions(seed=0, progress=False))
    after = adapted_mse(model, 10, (5,), inner_lr=0.02, tasks=100)[5][0]
    assert after < 0.5 * before


@pytest.mark.parametrize("inner_steps, first_order, anil", [(1, False, False), (2, False, False), (2, True, False),
                                                            (2, False, True)])
def test_task_batched_step_equals_the_per_task_loop(inner_steps: int, first_order: bool, anil: bool) -> None:
    """Grouped convolutions and per-(task, channel) BatchNorm give the loop's meta-gradients (float64), and the
    tasks' average running statistics."""
    model, ep = conv_net(), episode(6)
    kw = dict(inner_steps=inner_steps, inner_lr=0.4, first_order=first_order, names=head_names(model) if anil else None)
    loop_model = copy.deepcopy(model)
    want = ours(loop_model, ep, **kw)
    model.zero_grad()
    loss, out = batched_meta_loss(model, ep, **kw)
    loss.backward()
    assert out.shape == (TASKS, WAYS * QUERIES, WAYS)
    assert max_rel_error({n: p.grad for n, p in model.named_parameters()}, want) < 1e-10
    bn, loop_bn = model.backbone.blocks[0][1], loop_model.backbone.blocks[0][1]
    assert bn.num_batches_tracked == (inner_steps + 1) and not torch.equal(bn.running_mean, loop_bn.running_mean)


def test_strided_conv4_is_finns_backbone_and_the_fast_steps_support_it() -> None:
    """28x28 -> 14 -> 7 -> 4 -> 2 -> mean: a 64-d embedding; the task-batched and task-parallel steps give the
    loop's meta-gradients on it (float64), second order, BatchNorm γ/β outside the inner loop."""
    torch.manual_seed(0)
    body = StridedConv4(1, 64)
    sizes = []
    hooks = [b.register_forward_hook(lambda _m, _i, out: sizes.append(out.shape[-1])) for b in body.blocks[:4]]
    assert body(torch.rand(2, 1, 28, 28)).shape == (2, 64) and sizes == [14, 7, 4, 2]
    for h in hooks:
        h.remove()
    model, ep = Classifier(StridedConv4(1, 8), WAYS).double(), episode(6)
    kw = dict(inner_steps=2, inner_lr=0.4, names=without_norms(model))
    want = ours(copy.deepcopy(model), ep, **kw)
    for step in (batched_meta_loss, partial(parallel_meta_loss, workers=2)):
        model.zero_grad()
        step(model, ep, **kw)[0].backward()
        assert max_rel_error({n: p.grad for n, p in model.named_parameters()}, want) < 1e-10
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d"):
        batched_meta_loss(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8, 5)),
                          ep, **(kw | {"names": None}))


def test_task_batched_step_on_an_mlp_and_an_unsupported_layer() -> None:
    torch.manual_seed(0)
    model = sinusoid_mlp().double()
    batch = SinusoidSampler(5, 7).sample(3, make_generator(0))
    batch = type(batch)(*(v.double() for v in vars(batch).values()))
    kw = dict(inner_steps=2, inner_lr=0.01, loss_fn=F.mse_loss)
    want = ours(model, batch, **kw)
    model.zero_grad()
    batched_meta_loss(model, batch, **kw)[0].backward()
    assert max_rel_error({n: p.grad for n, p in model.named_parameters()}, want) < 1e-10
    with pytest.raises(ValueError, match="LSTM"):
        batched_meta_loss(nn.Sequential(nn.LSTM(1, 4)), batch, **kw)


@pytest.mark.parametrize("inner_steps", [1, 2])
def test_benchmarked_implementations_compute_the_same_meta_gradient(omniglot_train, inner_steps: int) -> None:
    """torchmeta's MetaModule, higher's innerloop_ctx and the three lib steps agree in float64 on real Omniglot tasks."""
    errors = check_gradients(omniglot_train, inner_steps, tasks=2)
    assert set(errors) == {"lib", "lib batched", "lib parallel", "torchmeta", "higher"}
    assert max(errors.values()) < 1e-10


def test_benchmark_reports_every_implementation_and_refuses_bad_settings(omniglot_train) -> None:
    df = compare(omniglot_train, tasks=(2,), inner_steps=(1,), rounds=1, warmup=0)
    assert sorted(df.implementation) == ["higher", "lib", "lib batched", "lib parallel", "torchmeta"]
    assert (df.seconds_per_step > 0).all() and df.speedup_vs_fastest_library.notna().all()
    assert df.gflop_per_step.nunique() == 1 and (df.gflop_per_step > 0.1).all()  # one step's work, counted once
    assert (df.gflops_achieved * df.seconds_per_step - df.gflop_per_step).abs().max() < 1e-9
    with pytest.raises(ValueError, match="rounds"):
        compare(omniglot_train, rounds=0)


def test_benchmarked_libraries_do_the_same_arithmetic(omniglot_train) -> None:
    """Equal work: lib, torchmeta and higher count the same FLOPs per meta-step, which is why ``compare`` counts the
    work once, on the lib's loop, and divides it by each implementation's seconds."""
    torch.manual_seed(0)
    model = Classifier(conv4_for(tuple(omniglot_train.images.shape[2:])), 5)
    ep = EpisodeSampler(omniglot_train, 5, 1, 5).sample(2, make_generator(0))
    flops = {name: step_flops(partial(IMPLEMENTATIONS[name](copy.deepcopy(model), 2, 0.4), ep))
             for name in ("lib", "torchmeta", "higher")}
    assert flops["lib"] > 1e8 and len(set(flops.values())) == 1, flops


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_task_parallel_step_equals_the_per_task_loop(workers: int) -> None:
    model, ep = conv_net(), episode(8)
    kw = dict(inner_steps=2, inner_lr=0.4)
    want = ours(copy.deepcopy(model), ep, **kw)
    threads = torch.get_num_threads()
    model.zero_grad()
    loss, out = parallel_meta_loss(model, ep, workers=workers, **kw)
    loss.backward()
    assert torch.get_num_threads() == threads
    assert out.shape == (TASKS, WAYS * QUERIES, WAYS)
    torch.testing.assert_close(loss, meta_loss(copy.deepcopy(model), ep, **kw)[0], rtol=1e-12, atol=0)
    assert max_rel_error({n: p.grad for n, p in model.named_parameters()}, want) < 1e-10


def test_reptile_minibatches_cycle_through_the_task() -> None:
    """With ``inner_batch``, step i adapts on the i-th slice of a random order of the task's examples (seeded by the
    global generator); an ``inner_batch`` of the whole task is the full-batch direction."""
    model, ep, lr = conv_net(), episode(6), 0.1
    full, _ = reptile_direction(model, ep, inner_steps=2, inner_lr=lr)
    whole, _ = reptile_direction(model, ep, inner_steps=2, inner_lr=lr, inner_batch=WAYS * (SHOTS + QUERIES))
    assert max_rel_error(whole, full) < 1e-12
    torch.manual_seed(1)
    got, _ = reptile_direction(model, ep, inner_steps=3, inner_lr=lr, inner_batch=4)
    torch.manual_seed(1)
    want = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for t in range(TASKS):
        x, y = torch.cat([ep.support_x[t], ep.query_x[t]]), torch.cat([ep.support_y[t], ep.query_y[t]])
        order = torch.randperm(len(x)).repeat(2)  # 3 steps of 4 of the 20 examples
        theta = {n: p.detach().requires_grad_() for n, p in model.named_parameters()}
        params = theta
        for i in range(3):
            b = order[4 * i:4 * i + 4]
            params = adapt(model, params, x[b], y[b], steps=1, inner_lr=lr, first_order=True)
        for n in want:
            want[n] += (params[n] - theta[n]).detach() / TASKS
    assert max_rel_error(got, want) < 1e-12
    assert max_rel_error(got, full) > 1e-3
    with pytest.raises(ValueError, match="inner_batch"):
        train_reptile(model, None, 1, ReptileTraining(tasks=2, inner_steps=1, inner_lr=0.1, lr=1.0, inner_batch=0),
                      RunOptions(seed=0, progress=False))
