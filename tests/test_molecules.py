"""Molecules: fingerprints, assays as tasks, support draws and meta-training episodes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from metalearn.core.episodes import make_generator
from metalearn.datasets.fingerprints import distinct_smiles, load_fingerprints, morgan_fingerprints
from metalearn.datasets.molecules import TaskEpisodes, _from_rows, can_draw, draw_support, load_moleculenet, unpack_bits


def test_fingerprints_match_rdkit_and_unparsable_smiles_are_marked():
    smiles = ["CCO", "c1ccccc1O", "O=[PH](=O)c1ccccc1", "not a molecule", "CC(=O)Nc1ccc(O)cc1"]
    packed, parsed = morgan_fingerprints(smiles)
    assert packed.shape == (5, 256) and packed.dtype == np.uint8
    assert parsed.tolist() == [True, True, False, False, True]
    assert not packed[~parsed].any(), "an unparsable molecule must have no bits set"
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    bits = unpack_bits(torch.from_numpy(packed))
    for i in np.flatnonzero(parsed):
        on = list(gen.GetFingerprint(Chem.MolFromSmiles(smiles[i])).GetOnBits())
        assert torch.nonzero(bits[i]).flatten().tolist() == on


def test_unpack_bits_inverts_numpy_packbits():
    x = np.random.default_rng(0).integers(0, 2, (3, 4, 64)).astype(np.uint8)
    assert torch.equal(unpack_bits(torch.from_numpy(np.packbits(x, axis=-1))), torch.from_numpy(x).float())


def _toy_tasks():
    """Two tasks over four molecules; molecule 2 is unparsable."""
    smiles = np.array(["A", "B", "C", "D"], dtype=object)
    bits = np.arange(4 * 2, dtype=np.uint8).reshape(4, 2)
    parsed = np.array([True, True, False, True])
    rows = [("t1", "A", 1), ("t1", "C", 0), ("t2", "B", 0), ("t1", "D", 0), ("t2", "C", 1), ("t2", "D", 1),
            ("t2", "A", 1)]
    t, s, y = (np.array(c, dtype=object) for c in zip(*rows, strict=True))
    return _from_rows("toy", ["t1", "t2"], t, s, y.astype(int), smiles, bits, parsed)


def test_tasks_from_rows_skip_and_count_unparsable_molecules():
    d = _toy_tasks()
    assert d.skipped == {"t1": 1, "t2": 1}
    mol, y = d.task(0)
    assert mol.tolist() == [0, 3] and y.tolist() == [1, 0]
    mol, y = d.task(1)
    assert mol.tolist() == [1, 3, 0] and y.tolist() == [0, 1, 1]
    assert d.sizes.tolist() == [2, 3] and d.actives.tolist() == [1, 2]
    assert d.features(torch.tensor([3])).shape == (1, 16)
    other = _toy_tasks()
    other.label[0] = 0
    assert other.digest != d.digest


@pytest.mark.parametrize("n,pos,k", [(200, 50, 16), (157, 80, 64), (40, 3, 16), (300, 290, 32)])
def test_stratified_support_keeps_the_active_fraction_and_both_labels(n, pos, k):
    labels = torch.zeros(n, dtype=torch.int64)
    labels[torch.randperm(n, generator=torch.Generator().manual_seed(0))[:pos]] = 1
    support, query = draw_support(labels, k, "stratified", make_generator(3))
    assert len(support) == k and len(query) == n - k
    assert sorted(torch.cat([support, query]).tolist()) == list(range(n)), "support and query partition the task"
    n_pos = int(labels[support].sum())
    assert n_pos == min(max(round(k * pos / n), 1), k - 1)
    assert 0 < labels[query].sum() < len(query)


def test_balanced_support_has_k_of_each_label_and_draws_differ_by_seed():
    labels = torch.tensor([1] * 30 + [0] * 70)
    s1, q1 = draw_support(labels, 10, "balanced", make_generator(1))
    s2, _ = draw_support(labels, 10, "balanced", make_generator(2))
    assert len(s1) == 20 and labels[s1].sum() == 10 and len(q1) == 80
    assert set(s1.tolist()) != set(s2.tolist())
    s1b, _ = draw_support(labels, 10, "balanced", make_generator(1))
    assert torch.equal(s1, s1b), "the same seed must give the same draw"


def test_draws_refuse_tasks_that_are_too_small():
    assert can_draw(20, 5, 16, "stratified") and not can_draw(16, 5, 16, "stratified")
    assert not can_draw(30, 10, 10, "balanced") and can_draw(31, 11, 10, "balanced")
    with pytest.raises(ValueError, match="too small"):
        draw_support(torch.tensor([1] * 10 + [0] * 30), 10, "balanced", make_generator(0))
    with pytest.raises(ValueError, match="unknown support protocol"):
        draw_support(torch.tensor([1, 0, 1, 0]), 2, "random", make_generator(0))


def test_task_episodes_hold_the_fingerprints_and_labels_of_one_task():
    tox21 = load_moleculenet("tox21", "train")
    episodes = TaskEpisodes(tox21, 10, 16, "balanced")
    ep = episodes.sample(3, make_generator(0))
    assert ep.support_x.shape == (3, 20, 2048) and ep.query_x.shape == (3, 16, 2048)
    assert episodes.examples_per_task == 20 + 16 == TaskEpisodes(tox21, 20, 16).examples_per_task
    assert (ep.support_y.sum(1) == 10).all()
    for t in range(3):
        task = int(ep.classes[t, 0])
        mol, y = tox21.task(task)
        feats = tox21.features(mol)  # every molecule of that task
        for x, label in zip(ep.support_x[t], ep.support_y[t], strict=True):
            match = (feats == x).all(1)
            assert match.any() and label in y[match], "a support molecule must come from its task, with its label"
    with pytest.raises(ValueError, match="no task"):
        TaskEpisodes(tox21, 5000, 16, "balanced")


def test_tox21_few_shot_split_on_the_real_data():
    """The benchmark's 3 test tasks, with the 8 unparsable molecules ([AlH3]) skipped and counted."""
    test = load_moleculenet("tox21", "test")
    assert test.task_names == ["SR-HSE", "SR-MMP", "SR-p53"]
    from metalearn.datasets.fetch import load_molecules
    table = load_molecules("tox21")
    for t, name in enumerate(test.task_names):
        labelled = table[name].notna()
        assert int(test.sizes[t]) + test.skipped.get(name, 0) == int(labelled.sum())
        assert int(test.actives[t]) <= int((table[name] == 1).sum())
    assert sum(test.skipped.values()) > 0
    bits, parsed = load_fingerprints("tox21", distinct_smiles(table))
    assert (~parsed).sum() == 8
    with pytest.raises(ValueError, match="other tox21 molecules"):
        load_fingerprints("tox21", distinct_smiles(table)[:-1])
