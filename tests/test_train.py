"""Trainer: a run interrupted and resumed from its checkpoint ends exactly like an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalearn.core.episodes import EpisodeSampler
from metalearn.core.models import Conv4
from metalearn.core.train import DEADLINE_ENV, BudgetExhausted, NonFiniteLoss, RunOptions, lr_scheduler, step_seed, train


def _run(omniglot_train, ckpt, steps=12, interrupt_at=None, nan_at=None, validate=None, snapshots=()):
    torch.manual_seed(0)
    model = torch.nn.Sequential(Conv4(), torch.nn.Dropout(0.3), torch.nn.Linear(64, 5))  # dropout: global RNG
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    sampler = EpisodeSampler(omniglot_train, 5, 1, 2)

    def batch_fn(step, g):
        if step == interrupt_at:
            raise KeyboardInterrupt
        ep = sampler.sample(2, g)
        return ep.query_x.flatten(0, 1), ep.query_y.flatten()

    def loss_fn(m, batch):
        logits = m(batch[0])
        loss = F.cross_entropy(logits, batch[1])
        if nan_at is not None and torch.initial_seed() == step_seed(3, nan_at - 1):
            loss = loss * float("nan")  # step nan_at (train reseeds torch with the step's seed)
        return loss, {"accuracy": (logits.argmax(1) == batch[1]).float().mean().item()}

    run = RunOptions(seed=3, checkpoint=ckpt, checkpoint_every=5, log_every=2, validate=validate,
                     validate_every=3 if validate else 0, progress=False, snapshots=snapshots)
    result = train(model, loss_fn, batch_fn, steps, opt, run, sched, examples=2 * 5 * 2)  # 2 tasks x 5 ways x 2 queries
    return model, result


def _timeless(rows):
    """Log rows without their wall-clock ``seconds`` (which no two runs share)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_resume_matches_uninterrupted(omniglot_train, tmp_path):
    straight, straight_res = _run(omniglot_train, tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        _run(omniglot_train, tmp_path / "b.pt", interrupt_at=7)  # dies after the step-5 checkpoint
    resumed, resumed_res = _run(omniglot_train, tmp_path / "b.pt")
    assert resumed_res.resumed_from == 5
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name} differs after resume")
    assert _timeless(straight_res.history) == _timeless(resumed_res.history)
    assert [r["step"] for r in straight_res.history] == [2, 4, 6, 8, 10, 12]
    assert [r["examples"] for r in resumed_res.history] == [20 * r["step"] for r in straight_res.history]


def test_budget_stops_after_every_step_and_ends_bit_identical(omniglot_train, tmp_path, monkeypatch):
    """A past deadline stops a run after each step (11 stops in 12 steps): across the stops, the scheduler's state,
    the running averages of the log rows (every 2 steps) and the RNG streams carry over exactly."""
    straight, straight_res = _run(omniglot_train, tmp_path / "a.pt")
    monkeypatch.setenv(DEADLINE_ENV, "0")
    for stop in range(1, 12):
        with pytest.raises(BudgetExhausted, match=f"stopped at step {stop} of 12"):
            _run(omniglot_train, tmp_path / "b.pt")
    resumed, resumed_res = _run(omniglot_train, tmp_path / "b.pt")
    assert resumed_res.resumed_from == 11 and _timeless(resumed_res.history) == _timeless(straight_res.history)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name} differs after 11 budget stops")


def test_non_finite_weights_are_never_saved(tmp_path):
    model = torch.nn.Linear(1, 1)
    opt = torch.optim.SGD(model.parameters(), lr=1e38)  # a finite loss, then weights that overflow

    def loss_fn(m, batch):
        return (m(batch) ** 2).sum() * 1e3, {}

    with pytest.raises(NonFiniteLoss, match="the weights are not finite after step"):
        train(model, loss_fn, lambda step, g: torch.ones(4, 1), 3, opt,
              RunOptions(seed=0, checkpoint=tmp_path / "c.pt", checkpoint_every=1, progress=False), examples=4)
    assert not (tmp_path / "c.pt").exists() or torch.isfinite(
        torch.load(tmp_path / "c.pt", weights_only=True)["model"]["weight"]).all()


def test_loss_falls(omniglot_train):
    _, result = _run(omniglot_train, None, steps=40)
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_step_seeds_differ():
    assert step_seed(0, 1) != step_seed(0, 2) != step_seed(1, 1)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(omniglot_train, tmp_path):
    ckpt = tmp_path / "c.pt"
    with pytest.raises(NonFiniteLoss, match=r"train: the loss is nan at step 7; the last finite loss was [\d.]+ at "
                                            r"step 6; the checkpoint .*c.pt is kept"):
        _run(omniglot_train, ckpt, nan_at=7)
    assert torch.load(ckpt, weights_only=True)["step"] == 5  # the step-5 checkpoint, not overwritten


def test_damaged_checkpoint_is_moved_aside_and_the_run_starts_over(omniglot_train, tmp_path, capsys):
    straight, straight_res = _run(omniglot_train, tmp_path / "a.pt", steps=6)
    ckpt = tmp_path / "b.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(omniglot_train, ckpt, steps=6, interrupt_at=5)
    ckpt.write_bytes(ckpt.read_bytes()[:2000])  # truncated
    again, again_res = _run(omniglot_train, ckpt, steps=6)
    assert "refused the checkpoint" in capsys.readouterr().out and (tmp_path / "b.pt.bad").exists()
    assert again_res.resumed_from == 0 and _timeless(again_res.history) == _timeless(straight_res.history)
    for a, b in zip(straight.state_dict().values(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_bad_arguments():
    model = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        train(model, None, None, -1, torch.optim.SGD(model.parameters(), 0.1), RunOptions(seed=0), examples=1)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="examples"):
            train(model, None, None, 1, torch.optim.SGD(model.parameters(), 0.1), RunOptions(seed=0), examples=bad)


def _head_score(model):
    """A validation score that is a fixed function of the weights (what a real validation is), peaking mid-run."""
    return -abs(model[2].weight.norm().item() - 2.305)


def test_validation_keeps_the_best_step_and_survives_a_resume(omniglot_train, tmp_path):
    full, full_res = _run(omniglot_train, tmp_path / "a.pt", validate=_head_score)
    checks = [v["step"] for v in full_res.validation]
    assert checks == [3, 6, 9, 12] and all(v["seconds"] > 0 for v in full_res.validation)
    best = max(full_res.validation, key=lambda v: v["val_accuracy"])["step"]
    assert full_res.best_step == best
    short, _ = _run(omniglot_train, tmp_path / "b.pt", steps=best)  # the same run, stopped at the chosen step
    for (name, a), b in zip(full.state_dict().items(), short.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name}: not the weights of step {best}")
    with pytest.raises(KeyboardInterrupt):
        _run(omniglot_train, tmp_path / "c.pt", interrupt_at=7, validate=_head_score)  # after checks 3 and 6
    resumed, resumed_res = _run(omniglot_train, tmp_path / "c.pt", validate=_head_score)
    assert resumed_res.resumed_from == 5 and _timeless(resumed_res.validation) == _timeless(full_res.validation)
    assert resumed_res.best_step == best and all(torch.equal(a, b) for a, b in zip(
        full.state_dict().values(), resumed.state_dict().values(), strict=True))


@pytest.mark.parametrize("validate", [None, _head_score])
def test_snapshots_are_the_runs_stopped_there_and_survive_a_resume(omniglot_train, tmp_path, validate):
    """One run's snapshots at steps 4 and 7 are the weights that runs of 4 and 7 steps end with (the best validated
    so far when validating: a snapshot step is also a check), and a resume after step 5 keeps the first one."""
    with pytest.raises(KeyboardInterrupt):
        _run(omniglot_train, tmp_path / "a.pt", interrupt_at=7, validate=validate, snapshots=(4, 7))
    _, res = _run(omniglot_train, tmp_path / "a.pt", validate=validate, snapshots=(4, 7))
    assert res.resumed_from == 5 and sorted(res.snapshots) == [4, 7]
    if validate is not None:
        assert [v["step"] for v in res.validation] == [3, 4, 6, 7, 9, 12]
    for step in (4, 7):
        snap = res.snapshots[step]
        assert snap["examples"] == 20 * step and snap["seconds"] > 0
        short, _ = _run(omniglot_train, tmp_path / f"s{step}.pt", steps=step, validate=validate)
        for (name, a), b in zip(short.state_dict().items(), snap["state"].values(), strict=True):
            torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f"{name}: snapshot {step} is not that run's end")
    assert res.snapshots[4]["seconds"] <= res.snapshots[7]["seconds"]


def test_snapshots_must_be_increasing_steps_of_the_run():
    model = torch.nn.Linear(1, 1)
    for bad in ((0,), (3, 2), (2, 2), (5,)):
        with pytest.raises(ValueError, match="snapshots"):
            train(model, None, None, 4, torch.optim.SGD(model.parameters(), 0.1), RunOptions(seed=0, snapshots=bad),
                  examples=1)


def test_learning_rate_schedules():
    def lrs(**kw):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = lr_scheduler(opt, 10, **kw)
        out = []
        for _ in range(10):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            if sched is not None:
                sched.step()
        return out

    assert lrs() == [1.0] * 10
    assert lrs(halve_lr_every=4) == [1.0] * 4 + [0.5] * 4 + [0.25] * 2
    cosine = lrs(cosine=True)
    assert cosine[0] == 1.0 and all(a > b for a, b in zip(cosine, cosine[1:], strict=False)) and cosine[-1] < 0.03
    with pytest.raises(ValueError, match="not both"):
        lrs(cosine=True, halve_lr_every=4)
