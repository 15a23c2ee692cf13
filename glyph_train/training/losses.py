"""Supervised contrastive loss (Khosla et al. 2020, L_out) and the cross-process gather it needs.

Why the gather and how it is scaled. SupCon over a global batch of N = Σ B_r samples is
    L = (1/V) Σ_i ℓ_i,   ℓ_i = -mean_{p∈P(i)} log softmax_{a≠i}(z_i·z_a/τ)[p],
V = number of anchors with at least one positive. Rank r computes only its own anchors' terms against the
gathered keys of all ranks: L_r = (1/V) Σ_{i∈r} ℓ_i, so that Σ_r L_r = L and no rank repeats another's
N×N work. ℓ_i depends on every rank's embeddings through the keys, so the gather's backward all-reduces
(sums) the key gradients and hands each rank its own rows: rank r then holds Σ_r' ∂L_r'/∂z_r = ∂L/∂z_r.
DDP (and Accelerate) *average* parameter gradients over the W ranks, so each rank backpropagates W·L_r:
    (1/W) Σ_r W·(∂L/∂z_r)(∂z_r/∂θ) = ∂L/∂θ,
exactly the single-process gradient of the whole batch, whatever each rank's batch size. The value returned
is L itself (the all-reduced sum, attached as a constant), so every rank logs the single-process number.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def _world() -> tuple[int, int]:
    """(world size, rank); (1, 0) when torch.distributed is not running."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def _gather_rows(t: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Concatenate `t` along dim 0 over ranks (no autograd); ranks may hold different numbers of rows."""
    world, _ = _world()
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    padded = t.new_zeros((max(sizes), *t.shape[1:]))  # all_gather wants equal shapes
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)]), sizes


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        gathered, sizes = _gather_rows(t.detach())
        _, rank = _world()
        ctx.start = sum(sizes[:rank])
        ctx.stop = ctx.start + sizes[rank]
        return gathered

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # all_reduce rather than reduce_scatter: gloo (the CPU backend) has no reduce_scatter
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop]


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Rows of `t` from every rank, concatenated in rank order; the backward pass sums the gradient over
    ranks and returns this rank's rows. Identity when not distributed (or world size 1)."""
    if _world()[0] == 1:
        return t
    return _AllGatherWithGrad.apply(t)


def _supcon_terms(anchors: torch.Tensor, anchor_labels: torch.Tensor, anchor_cols: torch.Tensor,
                  keys: torch.Tensor, key_labels: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor L_out terms ℓ_i and whether anchor i has a positive. Anchor i is keys[anchor_cols[i]]."""
    logits = anchors @ keys.T / temperature
    cols = torch.arange(keys.shape[0], device=keys.device)
    is_self = anchor_cols[:, None] == cols[None, :]
    # a negative label has no positives: such items (the other class) only ever serve as negatives
    positive = (anchor_labels[:, None] == key_labels[None, :]) & ~is_self & (anchor_labels >= 0)[:, None]
    # logsumexp is the max-subtracted stable form; -inf drops self from the denominator
    log_prob = logits - logits.masked_fill(is_self, float("-inf")).logsumexp(dim=1, keepdim=True)
    num_pos = positive.sum(dim=1)
    # masked_fill, not multiply: keeps non-positive entries (incl. self) out of the sum and its gradient
    mean_log_prob_pos = log_prob.masked_fill(~positive, 0.0).sum(dim=1) / num_pos.clamp_min(1)
    return -mean_log_prob_pos, num_pos > 0


def supcon_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Khosla et al.'s L_out on L2-normalised `embeddings` (B, D) with integer `labels` (B,).

    Mean over anchors that have a positive of the mean log-probability of their positives; anchors without
    positives (a label seen once, or a negative label: items that are only ever negatives) are left out (a batch with none gives a 0 that still carries the graph). Computed in fp32.
    Equals pytorch-metric-learning's SupConLoss(temperature) except in the degenerate batch with a single
    label, where pml returns 0 and this returns the (well-defined) L_out.
    """
    z = embeddings.float()
    terms, valid = _supcon_terms(z, labels, torch.arange(z.shape[0], device=z.device), z, labels, temperature)
    return terms.masked_fill(~valid, 0.0).sum() / valid.sum().clamp_min(1)


def distributed_supcon_loss(embeddings: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """SupCon over the batch gathered from all ranks; value and DDP-averaged parameter gradients equal
    `supcon_loss` on the concatenated batch in one process (see the module docstring)."""
    world, rank = _world()
    if world == 1:
        return supcon_loss(embeddings, labels, temperature)
    z = embeddings.float()
    keys = all_gather_with_grad(z)
    key_labels, sizes = _gather_rows(labels)
    start = sum(sizes[:rank])
    cols = torch.arange(start, start + z.shape[0], device=z.device)
    terms, valid = _supcon_terms(z, labels, cols, keys, key_labels, temperature)
    # anchors with a positive anywhere in the global batch: a non-negative label that occurs at least twice
    _, inverse, counts = torch.unique(key_labels, return_inverse=True, return_counts=True)
    num_valid = ((counts[inverse] > 1) & (key_labels >= 0)).sum().clamp_min(1)
    local = terms.masked_fill(~valid, 0.0).sum() / num_valid
    total = local.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    scaled = world * local  # undoes DDP's 1/W averaging
    return scaled + (total - scaled.detach())  # value: the global loss; gradient: that of `scaled`
