"""Train a glyph classifier + embedding model. Runs unchanged on one CPU, N gloo processes, or N GPUs:

    glyph-train train --db glyphs.db --epochs 10
    accelerate launch --config_file accelerate_configs/cpu_multiprocess.yaml -m glyph_train.train --db glyphs.db

The story, top to bottom: config → accelerator → data → model/optimizer/schedule → resume → epochs of
(train, evaluate, checkpoint) → export.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from glyph_train.errors import GlyphTrainError
from glyph_train.evaluation.evaluate import evaluate_model, log_retrieval_examples
from glyph_train.evaluation.metrics import describe_search
from glyph_train.model.export import save_export
from glyph_train.model.network import GlyphModel, check_model_name, param_groups
from glyph_train.outputs import check_output_dir, check_outputs, existing_file
from glyph_train.training import config as config_mod
from glyph_train.training.checkpoint import Checkpointer, TrainState, claim_run_dir
from glyph_train.training.config import TrainConfig
from glyph_train.training.data import check_one_global_batch, load_training_data, make_loaders, other_class_prior
from glyph_train.training.distributed import (check_same_flags, check_world_size, make_accelerator,
                                              resolve_mixed_precision)
from glyph_train.training.losses import distributed_supcon_loss
from glyph_train.training.schedule import make_scheduler, optimizer_steps
from glyph_train.training.tracking import MetricsLog, start_tracking, wandb_mode


def train(cfg: TrainConfig) -> dict:
    if cfg.suppress_warnings:
        warnings.filterwarnings("ignore")
    out_dir = Path(cfg.out_dir)
    check_model_name(cfg.model)  # both refused before anything is rendered
    check_output_dir(out_dir, "--out-dir")
    mode = wandb_mode(cfg.wandb_mode)
    cfg.mixed_precision, precision_reason = resolve_mixed_precision(cfg.mixed_precision)  # saved as resolved
    accelerator = make_accelerator(cfg.mixed_precision, cfg.grad_accum, str(out_dir),
                                   log_with=None if mode == "disabled" else "wandb", compile=cfg.compile)
    check_world_size(accelerator, cfg.num_processes)
    check_same_flags(accelerator, cfg.to_dict())
    check_outputs({"--out-dir": out_dir}, {"--db": cfg.db, "--data": cfg.data, "--labels": existing_file(cfg.labels)})
    claim_run_dir(accelerator, out_dir, cfg.resume, cfg.overwrite)  # before any work: never mix two runs
    accelerator.print(f"world size {accelerator.num_processes} ({accelerator.distributed_type.value}), "
                      f"device {accelerator.device}, {torch.get_num_threads()} threads/process")
    accelerator.print(f"mixed precision {accelerator.mixed_precision} ({precision_reason}); "
                      f"torch.compile {accelerator.state.dynamo_plugin.backend.value.lower()}")
    if accelerator.is_main_process:
        print(f"retrieval search: {describe_search()}")
    set_seed(cfg.seed)

    data = load_training_data(cfg, accelerator)
    cfg.img_size, cfg.fit = data.render["img_size"], data.render["fit"]  # with --data the cache decides
    check_one_global_batch(cfg.batch_size, len(data.train), accelerator.num_processes)
    train_loader, val_loader, epoch_sampler = make_loaders(cfg, data)
    other, other_ratio = other_class_prior(data, epoch_sampler)  # out of the metrics, balanced in the export
    model = GlyphModel(cfg.model, num_classes=len(data.label_names), embedding_dim=cfg.embedding_dim,
                       img_size=cfg.img_size, arcface_margin=cfg.arcface_margin, arcface_scale=cfg.arcface_scale,
                       dropout=cfg.dropout, in_chans=data.train.channels)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.lr_backbone, cfg.lr_head, cfg.weight_decay))
    model, optimizer, train_loader, val_loader = accelerator.prepare(model, optimizer, train_loader, val_loader)
    total_steps = optimizer_steps(len(train_loader), cfg.grad_accum, cfg.epochs, cfg.max_steps)
    scheduler = make_scheduler(optimizer, cfg.lr_schedule, total_steps, cfg.warmup_frac)

    state = TrainState()
    ckpt = Checkpointer(accelerator, model, out_dir, state)
    if cfg.resume:
        ckpt.load(cfg.resume)
        accelerator.print(f"resumed at epoch {state.epoch}, step {state.step}, batch {state.batch_in_epoch}")
    if accelerator.is_main_process:  # only now: a failed --resume leaves the run's config.yaml as it was
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
    start_tracking(accelerator, cfg.wandb_project, cfg.run_name or out_dir.name, out_dir, cfg.to_dict(), mode)
    log = MetricsLog(accelerator, out_dir / "metrics.jsonl")
    metrics: dict = {}
    nonfinite = torch.zeros((), device=accelerator.device)

    for epoch in range(state.epoch, cfg.epochs):
        state.epoch = epoch
        model.train()
        seen, tic = 0, time.perf_counter()
        for batch in epoch_batches(accelerator, train_loader, epoch_sampler, state):
            with accelerator.accumulate(model):
                out = model(batch["image"], batch["label"])
                ce = F.cross_entropy(out["logits"], batch["label"], label_smoothing=cfg.label_smoothing)
                supcon = distributed_supcon_loss(out["embedding"], batch["group"], cfg.emb_temperature)
                w = cfg.emb_loss_weight * ramp(epoch + state.batch_in_epoch / len(train_loader), cfg.emb_ramp_epochs)
                loss = ce + w * supcon
                nonfinite += loss.detach().isfinite().logical_not()  # checked when logging/saving: no GPU sync
                accelerator.backward(loss)
                if accelerator.sync_gradients:  # norm of the unscaled gradient; inf = measure, don't clip
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            state.batch_in_epoch += 1
            seen += len(batch["label"]) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            scheduler.step_update(state.step)
            if state.step % cfg.log_interval == 0 or cfg.save_every and state.step % cfg.save_every == 0:
                stop_if_diverged(accelerator, nonfinite, state, ckpt)
            if state.step % cfg.log_interval == 0:
                log.log({"epoch": epoch, "loss": loss.item(), "ce": ce.item(), "supcon": supcon.item(),
                         "emb_weight": w, "lr_backbone": optimizer.param_groups[0]["lr"],
                         "lr_head": optimizer.param_groups[-1]["lr"], "grad_norm": float(grad_norm),
                         "img_per_s": seen / (time.perf_counter() - tic)}, step=state.step)
            if cfg.save_every and state.step % cfg.save_every == 0:
                ckpt.save()
            if cfg.max_steps and state.step >= cfg.max_steps:
                break
        train_rate = seen / max(time.perf_counter() - tic, 1e-9)
        stop_if_diverged(accelerator, nonfinite, state, ckpt)
        state.epoch, state.batch_in_epoch = epoch + 1, 0
        finished = epoch + 1 == cfg.epochs or bool(cfg.max_steps and state.step >= cfg.max_steps)
        if (epoch + 1) % cfg.retrieval_every == 0 or finished:
            metrics, examples = evaluate_model(model, val_loader, data.val_char_classes, accelerator, cfg.seed,
                                               fonts=data.val_fonts, images=data.validation.images,
                                               other=other, other_ratio=other_ratio)
            log.log({"epoch": epoch, "train_img_per_s": train_rate, "val": metrics}, step=state.step)
            log_retrieval_examples(log, examples, data.validation, data.label_names, state.step)
            ckpt.update_best(metrics.get(cfg.best_metric), lambda d: save_export(
                d, bare_model(accelerator, model), data.label_names, cfg.to_dict(), metrics.get("temperature"),
                other_ratio))
        ckpt.save()
        if finished:
            break

    if accelerator.is_main_process:
        save_export(out_dir / "export", bare_model(accelerator, model), data.label_names, cfg.to_dict(),
                    metrics.get("temperature"), other_ratio)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    accelerator.print(summary_line(metrics))
    return metrics


def bare_model(accelerator, model) -> GlyphModel:
    """The model without its DDP and torch.compile wrappers: exports hold the plain module's weights."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def epoch_batches(accelerator, loader, epoch_sampler, state: TrainState):
    """This epoch's batches (shuffle and augmentation seeded by the epoch), minus those consumed before a resume."""
    loader.set_epoch(state.epoch)  # Accelerate passes it to its seedable sampler, but neither to our own
    if epoch_sampler is not None:  # samplers behind its shard wrapper...
        epoch_sampler.set_epoch(state.epoch)
    loader.dataset.set_epoch(state.epoch)  # ...nor, with 2+ processes, to the dataset's augmentation
    batches = accelerator.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
    return tqdm(batches, desc=f"epoch {state.epoch}", initial=state.batch_in_epoch, total=len(loader),
                disable=None if accelerator.is_local_main_process else True,  # None: off when not a terminal
                dynamic_ncols=True, leave=False)


def stop_if_diverged(accelerator, nonfinite: torch.Tensor, state: TrainState, ckpt: Checkpointer) -> None:
    """Stop, with the last good checkpoint kept, once any process has seen a NaN/inf loss."""
    if accelerator.reduce(nonfinite, "sum") > 0:
        raise GlyphTrainError(
            f"loss became NaN/inf by epoch {state.epoch} step {state.step}; the last good checkpoint is kept "
            f"in {ckpt.dir}; lower --lr-backbone/--lr-head or set --grad-clip")


def ramp(epochs_done: float, ramp_epochs: float) -> float:
    """SupCon weight multiplier: linear from 0 to 1 over the first `ramp_epochs` epochs."""
    return 1.0 if ramp_epochs <= 0 else min(1.0, epochs_done / ramp_epochs)


def summary_line(metrics: dict) -> str:
    keys = ("top1", "top5", "hit_at_1", "hit_at_10", "map_at_r", "effect_size", "num_queries")
    return "final: " + "  ".join(f"{k}={metrics[k]:.4f}" if isinstance(metrics.get(k), float) else f"{k}={metrics.get(k)}"
                                 for k in keys)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    train(config_mod.config_from_args(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m glyph_train.train` / `accelerate launch -m glyph_train.train`: same errors as the CLI."""
    from glyph_train.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
