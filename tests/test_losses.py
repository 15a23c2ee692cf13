import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning.losses import SupConLoss

from glyph_train.training.losses import all_gather_with_grad, distributed_supcon_loss, supcon_loss

REPO = Path(__file__).resolve().parents[1]


def _random_batch(seed, n=48, dim=16, num_labels=12):
    """Unit vectors, repeated labels, and one singleton label (an anchor without positives)."""
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, dim, generator=g), dim=1)
    labels = torch.randint(0, num_labels, (n,), generator=g)
    return z, torch.cat([labels[:-1], torch.tensor([num_labels])])


@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_supcon_matches_pytorch_metric_learning(seed, temperature):
    z, y = _random_batch(seed)
    ours = supcon_loss(z, y, temperature)
    ref = SupConLoss(temperature=temperature)(z.double(), y)
    assert abs(ours.item() - ref.item()) / ref.item() <= 1e-5


def test_supcon_gradient_matches_pytorch_metric_learning():
    z, y = _random_batch(3)
    z64 = z.double().requires_grad_()
    SupConLoss(temperature=0.1)(z64, y).backward()
    # pml normalises inside its cosine similarity, so compare against ours behind the same normalisation
    zz = z.clone().requires_grad_()
    supcon_loss(F.normalize(zz, dim=1), y, 0.1).backward()
    assert torch.allclose(zz.grad.double(), z64.grad, rtol=1e-4, atol=1e-7)


def test_supcon_is_finite_and_keeps_graph_without_positives():
    z = F.normalize(torch.randn(6, 4), dim=1).requires_grad_()
    loss = supcon_loss(z, torch.arange(6))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    big = F.normalize(torch.randn(32, 8), dim=1).requires_grad_()  # tiny temperature: no overflow
    supcon_loss(big, torch.arange(32) % 4, temperature=1e-3).backward()
    assert torch.isfinite(big.grad).all()


def test_negative_labels_are_negatives_only_as_if_each_were_its_own_label():
    """The other class (--others-per-label) reaches SupCon as -1: many characters, so no two of its items
    are positives; they stay in every other anchor's denominator."""
    z, y = _random_batch(5)
    y[::5] = -1
    unique = y.clone()
    unique[y < 0] = 100 + torch.arange(int((y < 0).sum()))
    assert supcon_loss(z, y, 0.1).item() == pytest.approx(supcon_loss(z, unique, 0.1).item(), rel=1e-6)
    assert supcon_loss(z, y, 0.1).item() != pytest.approx(supcon_loss(z, y.abs(), 0.1).item(), rel=1e-3)


def test_single_process_is_identity():
    t = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(t) is t
    z, y = _random_batch(4)
    assert distributed_supcon_loss(z, y, 0.1).item() == supcon_loss(z, y, 0.1).item()


@pytest.fixture(scope="module")
def gloo_runs(tmp_path_factory):
    """Every scenario of tests/_gloo_worker.py in 1 reference process and 2 gloo ranks, all started at once."""
    tmp = tmp_path_factory.mktemp("gloo")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    runs = {"reference": (0, 1), "rank0": (0, 2), "rank1": (1, 2)}
    procs = {
        name: subprocess.Popen([sys.executable, str(REPO / "tests" / "_gloo_worker.py"), str(rank), str(world),
                                str(tmp / "rendezvous"), str(tmp / f"{name}.pt")],  # file store: no port race
                               env=env, stderr=subprocess.PIPE, text=True)
        for name, (rank, world) in runs.items()
    }
    for name, p in procs.items():
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"{name}: {err}"
    return {name: torch.load(tmp / f"{name}.pt") for name in runs}


def _rel_err(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


@pytest.mark.parametrize("scenario", ["linear", "glyph", "other"])
def test_two_gloo_processes_equal_one_process(scenario, gloo_runs):
    """2 DDP processes × half batch == 1 process × whole batch: SupCon value and parameter gradients.
    linear: Linear→normalise, unequal halves (5 + 11), SupCon only; glyph: GlyphModel(test_vit), CE + SupCon;
    other: as linear with label -1 (the other class) on both ranks."""
    ref = gloo_runs["reference"][scenario]
    assert ref["grads"]
    for rank in ("rank0", "rank1"):
        got = gloo_runs[rank][scenario]
        assert abs(got["supcon"] - ref["supcon"]) / ref["supcon"] <= 1e-5
        assert got["grads"].keys() == ref["grads"].keys()
        for name, g in ref["grads"].items():
            assert g.norm() > 0, name
            assert _rel_err(got["grads"][name], g) <= 1e-5, name
