"""One process of the gathered-SupCon equivalence test (tests/test_losses.py starts it).

    python tests/_gloo_worker.py RANK WORLD INIT_FILE OUT_FILE

WORLD 1 is the reference: plain model, whole batch, no process group. WORLD > 1: gloo process group,
DDP-wrapped model, this rank's slice of the same batch. Runs every scenario and writes
{scenario: {"supcon": float, "grads": {name: tensor}}}.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from glyph_train.training.losses import distributed_supcon_loss

TEMPERATURE = 0.1


class LinearEmbedder(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(10, 8)

    def forward(self, x):
        return {"embedding": F.normalize(self.proj(x), dim=-1)}


SCENARIOS = ("linear", "glyph", "other")


def make_case(scenario: str):
    """(model, inputs, labels, rows per rank for 2 ranks, CE weight): identical in every process."""
    torch.manual_seed(0)
    if scenario == "linear":  # unequal slices; label 9 occurs once (an anchor without positives)
        labels = torch.tensor([0, 1, 2, 0, 3, 1, 2, 3, 0, 1, 9, 2, 3, 0, 1, 2])
        return LinearEmbedder(), torch.randn(16, 10), labels, [5, 11], 0.0
    if scenario == "other":  # label -1 (the other class) on both ranks: only ever a negative, never an anchor
        labels = torch.tensor([0, -1, 2, 0, -1, 1, 2, -1, 0, 1, -1, 2, 3, 0, 1, 3])
        return LinearEmbedder(), torch.randn(16, 10), labels, [5, 11], 0.0
    if scenario == "glyph":  # the real model with CE + SupCon; equal slices, as the trainer's loaders give
        from glyph_train.model.network import GlyphModel

        model = GlyphModel("test_vit", num_classes=5, img_size=32, dropout=0.0)
        labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 0, 3, 1, 4])
        return model, torch.rand(12, 1, 32, 32), labels, [6, 6], 1.0
    raise ValueError(scenario)


def run_scenario(scenario: str, rank: int, world: int) -> dict:
    model, x, y, rows, ce_weight = make_case(scenario)
    if world > 1:
        start = sum(rows[:rank])
        x, y = x[start : start + rows[rank]], y[start : start + rows[rank]]
        net = nn.parallel.DistributedDataParallel(model)
    else:
        net = model
    out = net(x)
    supcon = distributed_supcon_loss(out["embedding"], y, TEMPERATURE)
    loss = supcon + (ce_weight * F.cross_entropy(out["logits"], y) if ce_weight else 0.0)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return {"supcon": supcon.item(), "grads": grads}


def main(rank: int, world: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.save({s: run_scenario(s, rank, world) for s in SCENARIOS}, out_file)
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
