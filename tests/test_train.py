"""Trainer: a run interrupted and resumed from its checkpoint ends exactly like an uninterrupted one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from metalearn.episodes import EpisodeSampler
from metalearn.models import Conv4
from metalearn.train import checkpoint_path, step_seed, train


def _run(omniglot_train, ckpt, steps=12, interrupt_at=None):
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
        return F.cross_entropy(logits, batch[1]), {"accuracy": (logits.argmax(1) == batch[1]).float().mean().item()}

    result = train(model, loss_fn, batch_fn, steps, opt, seed=3, scheduler=sched, checkpoint=ckpt,
                   checkpoint_every=5, log_every=2, progress=False)
    return model, result


def test_resume_matches_uninterrupted(omniglot_train, tmp_path):
    straight, straight_res = _run(omniglot_train, tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        _run(omniglot_train, tmp_path / "b.pt", interrupt_at=7)  # dies after the step-5 checkpoint
    resumed, resumed_res = _run(omniglot_train, tmp_path / "b.pt")
    assert resumed_res.resumed_from == 5
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name} differs after resume")
    assert straight_res.history == resumed_res.history
    assert [r["step"] for r in straight_res.history] == [2, 4, 6, 8, 10, 12]


def test_loss_falls(omniglot_train):
    _, result = _run(omniglot_train, None, steps=40)
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_checkpoint_path_depends_on_config(tmp_path):
    a = checkpoint_path(tmp_path, "x", {"lr": 0.1, "steps": 10})
    assert a == checkpoint_path(tmp_path, "x", {"steps": 10, "lr": 0.1})
    assert a != checkpoint_path(tmp_path, "x", {"lr": 0.2, "steps": 10})
    assert step_seed(0, 1) != step_seed(0, 2) != step_seed(1, 1)


def test_bad_arguments():
    model = torch.nn.Linear(1, 1)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        train(model, None, None, -1, torch.optim.SGD(model.parameters(), 0.1), seed=0)
