"""MANN with LRUA memory: the equations on a hand-worked example, the episode protocol and the memory's lifetime."""

from __future__ import annotations

import math

import pytest
import torch

from metalearn.core.episodes import ClassDataset, EpisodeSampler, make_generator
from metalearn.model_based.mann import (
    MANN,
    cosine_read_weights,
    downscale,
    instance_accuracy,
    instance_numbers,
    least_used,
    sample_sequences,
    update_usage,
    write,
    write_weights,
)


def test_lrua_equations_on_a_hand_worked_three_slot_example() -> None:
    """One head, three slots of size 2, worked by hand (values to 4 decimals)."""
    memory = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    usage = torch.tensor([[0.5, 0.1, 0.3]])
    prev_read = torch.tensor([[[0.2, 0.3, 0.5]]])
    key = torch.tensor([[[1.0, 0.0]]])
    # least used: the smallest usage is slot 1; the two smallest are slots 1 and 2
    assert least_used(usage, 1).tolist() == [[0.0, 1.0, 0.0]]
    assert least_used(usage, 2).tolist() == [[0.0, 1.0, 1.0]]
    # write weights with alpha = 0 (sigmoid 0.5): 0.5 * [0.2, 0.3, 0.5] + 0.5 * [0, 1, 0]
    ww = write_weights(torch.zeros(1, 1), prev_read, least_used(usage, 1))
    assert torch.allclose(ww, torch.tensor([[[0.1, 0.65, 0.25]]]))
    # write: slot 1 (least used) erased, then the key added with the write weights
    m = write(memory, ww, key, usage)
    assert torch.allclose(m, torch.tensor([[[1.1, 0.0], [0.65, 0.0], [1.25, 1.0]]]))
    # read: cosines 1, 1, 1.25 / sqrt(1.25^2 + 1) = 0.780869; softmax of them
    wr = cosine_read_weights(key, m)
    e = [math.e, math.e, math.exp(1.25 / math.sqrt(2.5625))]
    assert torch.allclose(wr, torch.tensor([[[v / sum(e) for v in e]]]), atol=1e-6)
    assert torch.allclose(wr, torch.tensor([[[0.3567, 0.3567, 0.2865]]]), atol=1e-4)
    assert torch.allclose(wr @ m, torch.tensor([[[0.9824, 0.2865]]]), atol=1e-4)  # r = sum_i w^r(i) M(i)
    # usage: 0.99 * [0.5, 0.1, 0.3] + w^r + w^w; the least used slot is now slot 2
    u = update_usage(usage, wr, ww, 0.99)
    assert torch.allclose(u, torch.tensor([[0.9517, 1.1057, 0.8335]]), atol=1e-4)
    assert least_used(u, 1).tolist() == [[0.0, 0.0, 1.0]]


def test_least_used_breaks_ties_to_the_lower_slot_and_checks_n() -> None:
    assert least_used(torch.zeros(1, 5), 2).tolist() == [[1.0, 1.0, 0.0, 0.0, 0.0]]
    with pytest.raises(ValueError, match="n must be between 1 and the 5 slots"):
        least_used(torch.zeros(1, 5), 6)


def _sequences(ways: int = 3, instances: int = 4, tasks: int = 2, seed: int = 0):
    images = torch.randint(0, 256, (6, 5, 1, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    data = ClassDataset(images, [f"c{i}" for i in range(6)], "toy")
    return data, *sample_sequences(data, ways, instances, tasks, make_generator(seed))


def _mann(memory: bool = True, ways: int = 3, written: str = "add") -> MANN:
    torch.manual_seed(0)
    return MANN(16, ways, hidden=12, slots=8, slot_size=5, heads=2, memory=memory, written=written).double()


def test_sequences_are_shuffled_episodes_with_each_class_instances_times() -> None:
    data, x, y = _sequences()
    assert x.shape == (2, 12, 1, 4, 4) and y.shape == (2, 12)
    assert all(torch.bincount(row, minlength=3).tolist() == [4, 4, 4] for row in y)
    assert not torch.equal(y[0], torch.arange(3).repeat_interleave(4))  # shuffled, not class by class
    # every image of a label comes from one class of the data set, a different one per label
    pixels = data.images.float().div(255).flatten(2)  # [classes, per_class, D]
    for xi, yi in zip(x, y, strict=True):
        owner = [int((pixels == img.flatten()).all(-1).any(-1).nonzero()[0]) for img in xi]
        assert len({(int(label), c) for label, c in zip(yi, owner, strict=True)}) == 3
    _, x2, y2 = _sequences()
    assert torch.equal(x, x2) and torch.equal(y, y2)
    with pytest.raises(ValueError, match="instances"):
        sample_sequences(data, 3, 6, 1, make_generator(0))


def test_instance_numbers_count_presentations() -> None:
    assert instance_numbers(torch.tensor([[0, 1, 0, 0, 1]])).tolist() == [[1, 1, 2, 3, 2]]


@pytest.mark.parametrize("memory", [True, False])
def test_labels_arrive_one_step_late_and_memory_resets_between_episodes(memory: bool) -> None:
    _, x, y = _sequences()
    model = _mann(memory)
    x = x.double()
    out = model.sequence(x, y)
    assert out.shape == (2, 12, 3)
    changed = y.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 3  # the label of step 5 is fed at step 6
    out2 = model.sequence(x, changed)
    assert torch.equal(out[:, :6], out2[:, :6]) and not torch.allclose(out[:, 6:], out2[:, 6:])
    # each episode starts from an empty memory: the same logits alone, in a batch, or after another episode
    alone = model.sequence(x[1:], y[1:])
    assert torch.allclose(out[1:], alone, atol=1e-12)
    model.sequence(x[:1], y[:1])
    assert torch.allclose(model.sequence(x[1:], y[1:]), alone, atol=1e-12)
    # while carrying the state on (run with a state) does change what follows
    if memory:
        _, state, _ = model.run(x[:1].flatten(2), y[:1])
        carried, _, _ = model.run(x[1:].flatten(2), y[1:], state)
        assert not torch.allclose(carried, alone, atol=1e-6)


def test_trace_gives_read_and_write_weights_that_are_distributions() -> None:
    _, x, y = _sequences()
    model = _mann()
    _, _, trace = model.run(x.double().flatten(2), y, trace=True)
    assert trace["read"].shape == trace["write"].shape == (2, 12, 2, 8)
    assert torch.allclose(trace["read"].sum(-1), torch.ones(2, 12, 2, dtype=torch.double))
    # the first write has no read to follow (w^r_0 = 0): it goes to the 2 (= heads) least used slots only
    assert (trace["write"] >= 0).all() and ((trace["write"][:, 0] > 0).sum(-1) == 2).all()



@pytest.mark.parametrize("written", ["key", "add"])
def test_the_first_write_stores_the_key_or_the_add_vector(written: str) -> None:
    """written="key" (the paper's equation) stores the read key k_1, written="add" the separate add vector a_1: in the
    H least used (empty) slots, with the write weights, after the least used slot was erased."""
    _, x, _ = _sequences()
    model = _mann(written=written)
    state, x0, y0 = model.initial_state(2), x.double().flatten(2)[:, 0], torch.zeros(2, 3, dtype=torch.double)
    h, _ = model.controller(torch.cat([x0, y0, state.reads], -1), (state.h, state.c))
    vectors = {"key": torch.tanh(model.key(h)).view(2, 2, -1)}
    if written == "add":
        vectors["add"] = torch.tanh(model.add(h)).view(2, 2, -1)
    _, after, w = model.step(x0, y0, state)
    ww = w["write"]
    assert (ww[..., 2:] == 0).all()  # w^r_0 = 0: only the 2 least used slots are written
    prior = torch.tensor([0.0, 1e-6], dtype=torch.double)[None, :, None]  # slot 0 erased first, slot 1 as it was
    for name, v in vectors.items():
        matches = torch.allclose(after.memory[:, :2], prior + (ww.transpose(1, 2) @ v)[:, :2], atol=1e-12)
        assert matches == (name == written)
    with pytest.raises(ValueError, match="written must be"):
        _mann(written="value")

def test_few_shot_protocol_scores_each_query_on_its_own() -> None:
    data, _, _ = _sequences()
    ep = EpisodeSampler(data, 3, 2, 3).sample(2, make_generator(1))
    model = _mann()
    sx, qx = ep.support_x.double(), ep.query_x.double()
    scores = model(sx, ep.support_y, qx, 3)
    assert scores.shape == (2, 9, 3)
    one = model(sx, ep.support_y, qx[:, 4:5], 3)  # a query alone gets the same scores
    assert torch.allclose(one[:, 0], scores[:, 4], atol=1e-12)
    with pytest.raises(ValueError, match="predicts 3 labels"):
        model(sx, ep.support_y, qx, 5)


def test_instance_accuracy_reports_each_presentation_with_a_ci() -> None:
    data, _, _ = _sequences()
    model = _mann().float()
    acc = instance_accuracy(model, data, episodes=6, instances=4, report=(1, 2, 4), tasks_per_batch=4)
    assert set(acc) == {1, 2, 4} and all(r.n == 6 and 0 <= r.mean <= 100 for r in acc.values())
    again = instance_accuracy(model, data, episodes=6, instances=4, report=(1, 2, 4), tasks_per_batch=4)
    assert all((acc[n].per_episode == again[n].per_episode).all() for n in acc)
    with pytest.raises(ValueError, match="instances to report"):
        instance_accuracy(model, data, episodes=6, instances=4, report=(5,))


def test_downscale_keeps_classes_and_makes_small_uint8_images() -> None:
    data = ClassDataset(torch.full((2, 3, 1, 28, 28), 200, dtype=torch.uint8), ["a", "b"], "omniglot/test")
    small = downscale(data, 20)
    assert small.images.shape == (2, 3, 1, 20, 20) and small.images.dtype == torch.uint8
    assert (small.images == 200).all() and small.name == "omniglot/test@20px"


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="heads <= slots"):
        MANN(16, 3, slots=2, heads=4)


def test_instance_validation_scores_the_chosen_presentation_and_refuses_bad_settings() -> None:
    data, _, _ = _sequences()
    from metalearn.model_based.mann import InstanceValidation

    model = _mann().float()
    val = InstanceValidation(data, episodes=4, every=2, instance=2, instances=4)
    assert val(model) == instance_accuracy(model, data, episodes=4, instances=4, report=(2,), seed=1)[2].mean
    assert val.describe()["instance"] == 2 and val.predict is instance_accuracy
    with pytest.raises(ValueError, match="instance <= instances"):
        InstanceValidation(data, instance=11)
