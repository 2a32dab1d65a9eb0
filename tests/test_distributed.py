"""A meta-batch over processes (torchrun, gloo) equals one process on the same meta-batch, in float64."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metalearn.core.episodes import ClassDataset, EpisodeSampler, make_generator
from metalearn.core.train import RunOptions
from metalearn.gradient.distributed import GradientAverager, ShardSampler
from metalearn.gradient.maml import train_maml
from metalearn.gradient.networks import finn_network
from metalearn.gradient.outer_loop import MetaTraining
from metalearn.study.distributed import parse_args

SETTINGS = dict(ways=3, shots=1, queries=2, tasks=4, steps=3, inner_steps=1, inner_lr=0.4, inner="no_norms", hidden=8,
                seed=0)


def _omniglot() -> ClassDataset:
    from metalearn.datasets.fetch import load_omniglot

    return ClassDataset.from_numpy(*load_omniglot("train"), name="omniglot/train")


def test_shards_of_a_meta_batch_are_its_tasks_in_order():
    data = _omniglot()
    sampler = EpisodeSampler(data, 5, 1, 2)
    whole = sampler.sample(6, make_generator(3))
    parts = [ShardSampler(sampler, r, 3, torch.float64).sample(6, make_generator(3)) for r in range(3)]
    assert torch.equal(torch.cat([p.query_x for p in parts]), whole.query_x.double())
    assert torch.equal(torch.cat([p.support_y for p in parts]), whole.support_y)
    assert parts[0].support_y.dtype == torch.int64 and parts[1].support_x.shape[0] == 2
    with pytest.raises(ValueError, match="multiple of 4"):
        ShardSampler(sampler, 0, 4).sample(6, make_generator(3))
    with pytest.raises(ValueError, match="rank"):
        ShardSampler(sampler, 2, 2)
    with pytest.raises(SystemExit):
        parse_args(["--out", "x.pt", "--tasks", "0"])


@pytest.mark.slow
def test_torchrun_over_two_processes_equals_one_process(tmp_path: Path):
    """2 gloo processes, 2 of the 4 tasks each: the averaged meta-gradient of every step and the weights after 3
    steps equal those of the plain trainer on all 4 tasks in one process."""
    torchrun = Path(sys.executable).with_name("torchrun")
    cli = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()]
    done = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "metalearn.study.distributed",
                           "--dataset", "omniglot", "--dtype", "float64", *cli, "--out", str(tmp_path / "two.pt"),
                           "--trace", str(tmp_path / "two_gradients.pt")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    two = torch.load(tmp_path / "two.pt")
    two_gradients = torch.load(tmp_path / "two_gradients.pt")
    assert two["world_size"] == 2 and two["settings"]["tasks"] == 4

    s = SETTINGS
    data = _omniglot()
    torch.manual_seed(s["seed"])
    model = finn_network("omniglot", tuple(data.images.shape[2:]), s["ways"], s["hidden"]).double()
    recorded: dict[str, list[torch.Tensor]] = {n: [] for n, _ in model.named_parameters()}
    for n, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda p, n=n: recorded[n].append(p.grad.detach().clone()))
    whole = ShardSampler(EpisodeSampler(data, s["ways"], s["shots"], s["queries"]), 0, 1, torch.float64)
    train_maml(model, whole, s["steps"], MetaTraining(tasks=s["tasks"], inner_steps=s["inner_steps"],
                                                      inner_lr=s["inner_lr"], inner=s["inner"]),
               RunOptions(seed=s["seed"], progress=False))

    for name, p in model.named_parameters():
        assert len(two_gradients[name]) == len(recorded[name]) == s["steps"]
        for step, (a, b) in enumerate(zip(two_gradients[name], recorded[name], strict=True)):
            assert torch.allclose(a, b, rtol=1e-9, atol=1e-13), f"meta-gradient of {name} at step {step + 1}"
        assert torch.allclose(two["model"][name], p.detach(), rtol=1e-9, atol=1e-13), f"weights {name}"
    first = recorded["head.weight"][0]
    assert first.abs().max() > 1e-6, "a meta-gradient that is zero would make the comparison vacuous"


def test_gradient_averager_without_a_process_group_records_and_removes_its_hooks():
    model = torch.nn.Linear(3, 2)
    with GradientAverager(model, trace=True) as averager:
        model(torch.ones(4, 3)).sum().backward()
    model(torch.ones(4, 3)).sum().backward()  # after the block: not recorded
    assert [len(v) for v in averager.gradients.values()] == [1, 1]
    assert torch.equal(averager.gradients["bias"][0], torch.full((2,), 4.0))
