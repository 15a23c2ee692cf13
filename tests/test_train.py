"""End-to-end training runs on a tiny DB of real outlines with a tiny timm model (test_vit at 32 px).

Real processes throughout: the 2-process run goes through the documented CPU launch command (gloo),
the resume test kills a run with SIGKILL mid-epoch, and W&B writes a real offline run directory.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.dbfactory import DEFAULT_FONTS, font_path, write_db

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]  # `accelerate launch`, from any venv


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    write_db(root / "glyphs.db")
    return root


def common_args(root: Path, out: str, *extra: str) -> list[str]:
    return ["--db", str(root / "glyphs.db"), "--cache-dir", str(root / "cache"), "--val-frac", "0.3",
            "--model", "test_vit", "--img-size", "32", "--epochs", "2", "--batch-size", "16", "--num-workers", "0",
            "--log-interval", "5", "--save-every", "3", "--out-dir", str(root / out),
            "--mixed-precision", "no", *extra]  # fp32 on any CPU: exact comparisons; auto: tests/test_precision.py


def env() -> dict[str, str]:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
         "PYTHONUNBUFFERED": "1"}
    e.pop("GLYPH_TRAIN_NUM_PROCESSES", None)
    return e


def train(root: Path, out: str, *extra: str, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = (launcher or [sys.executable]) + ["-m", "glyph_train.train", *common_args(root, out, *extra)]
    res = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_metrics(run_dir: Path) -> dict:
    return [r for r in records(run_dir) if "val" in r][-1]["val"]


@pytest.fixture(scope="module")
def reference(workdir: Path) -> Path:
    train(workdir, "reference", "--wandb-mode", "disabled")
    return workdir / "reference"


def test_two_processes_through_documented_cpu_launch(workdir: Path, reference: Path) -> None:
    launcher = [*ACCELERATE, "--config_file", str(REPO / "accelerate_configs/cpu_multiprocess.yaml")]
    res = train(workdir, "two_procs", "--wandb-mode", "offline", launcher=launcher)
    assert "world size 2 (MULTI_CPU)" in res.stdout
    run = workdir / "two_procs"
    metrics = final_metrics(run)
    assert metrics["num_queries"] > 0 and 0.0 <= metrics["hit_at_10"] <= 1.0
    assert set(metrics) >= {"top1", "top5", "hit_at_1", "hit_at_5", "hit_at_10", "precision_at_1", "map_at_r",
                            "effect_size", "num_queries", "by_char_class"}
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and list(offline[0].glob("*.wandb")), "no W&B offline run to `wandb sync`"
    assert list(offline[0].glob("files/media/images/retrieval/query_*.png")), "no retrieval example images"
    # a global batch of 2 x 16 halves the optimizer steps of the 1-process run
    assert records(run)[-1]["step"] * 2 == pytest.approx(records(reference)[-1]["step"], abs=2)
    from glyph_train.model.export import load_export

    model, labels, config = load_export(run / "export")
    assert model.classifier.out_features == len(labels) and config["model"] == "test_vit"


def test_same_seed_twice_gives_identical_metrics(workdir: Path, reference: Path) -> None:
    train(workdir, "again", "--wandb-mode", "disabled")
    assert final_metrics(workdir / "again") == final_metrics(reference)


def test_kill_mid_epoch_then_resume_matches_uninterrupted_run(workdir: Path, reference: Path) -> None:
    run = workdir / "killed"
    cmd = [sys.executable, "-m", "glyph_train.train", *common_args(workdir, "killed", "--wandb-mode", "disabled")]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = run / "checkpoints" / "step_00000006"  # 6 of 11 steps: mid first epoch
    deadline = time.time() + 300
    while not target.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (run / "export").exists()
    res = train(workdir, "killed", "--wandb-mode", "disabled", "--resume", "auto")
    assert "resumed at epoch 0" in res.stdout
    assert final_metrics(run) == final_metrics(reference)


def test_diverging_loss_stops_with_clear_message_and_keeps_good_checkpoints(workdir: Path) -> None:
    cmd = [sys.executable, "-m", "glyph_train.train",
           *common_args(workdir, "diverged", "--wandb-mode", "disabled", "--lr-head", "1e12", "--lr-backbone", "1e12",
                        "--grad-clip", "0", "--save-every", "1")]
    res = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 2, res.stderr[-2000:]
    error = [line for line in res.stderr.splitlines() if line.startswith("glyph-train train: error:")]
    assert error and ("loss became" in error[0] or "weights became" in error[0]) and "Traceback" not in res.stderr
    from safetensors.torch import load_file

    for ckpt in (workdir / "diverged" / "checkpoints").glob("step_*"):
        weights = load_file(ckpt / "model.safetensors")
        assert all(bool(t.isfinite().all()) for t in weights.values()), f"{ckpt.name} holds non-finite weights"


def train_in_process(root: Path, out: str, *extra: str) -> list[dict]:
    """Same process as the in-process reference, so any difference comes from the flag, not from threads."""
    from accelerate.state import AcceleratorState

    from glyph_train.train import train as run_training
    from glyph_train.training.config import parse_config

    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        run_training(parse_config(common_args(root, out, "--wandb-mode", "disabled", "--save-every", "0", *extra)))
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
    return records(root / out)


@pytest.fixture(scope="module")
def in_process_reference(workdir: Path) -> list[dict]:
    first = train_in_process(workdir, "inproc_ref")
    assert _same_but_time(first, train_in_process(workdir, "inproc_ref2")), "same seed, same process: must repeat"
    return first


def _same_but_time(a: list[dict], b: list[dict]) -> bool:
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("time", "img_per_s", "train_img_per_s")} for r in rs]  # noqa: E731
    return strip(a) == strip(b)


@pytest.mark.parametrize("flags, check", [
    (["--grad-accum", "2"], lambda r, ref: r[-1]["step"] == 2 * math.ceil(ref[-1]["step"] / 2 / 2)),
    (["--max-steps", "4"], lambda r, ref: r[-1]["step"] == 4),
    (["--lr-schedule", "constant", "--warmup-frac", "0"],
     lambda r, ref: {x["lr_head"] for x in r if "lr_head" in x} == {3e-3}),
    (["--emb-ramp-epochs", "2"], lambda r, ref: [x["emb_weight"] for x in r if "emb_weight" in x][0] < 0.3),
    (["--emb-loss-weight", "0.5"], lambda r, ref: {x["emb_weight"] for x in r if "emb_weight" in x} == {0.5}),
    (["--retrieval-cap", "40"], lambda r, ref: r[-1]["val"]["num_queries"] <= 40 < ref[-1]["val"]["num_queries"]),
    (["--retrieval-every", "2", "--epochs", "3"], lambda r, ref: [x["epoch"] for x in r if "val" in x] == [1, 2]),
    (["--label-smoothing", "0.2"], lambda r, ref: r[0]["ce"] != ref[0]["ce"]),
    (["--arcface-margin", "0.3"], lambda r, ref: r[0]["ce"] != ref[0]["ce"]),
    (["--contrastive-grouping", "hybrid"], lambda r, ref: r[0]["supcon"] != ref[0]["supcon"]),
    (["--classes-per-batch", "4"], lambda r, ref: r[0]["loss"] != ref[0]["loss"]),
    (["--family-balance", "1"], lambda r, ref: r[0]["loss"] != ref[0]["loss"]),
    (["--label-balance", "1"], lambda r, ref: r[0]["loss"] != ref[0]["loss"]),
    (["--fit", "tight+em"], lambda r, ref: r[0]["loss"] != ref[0]["loss"]),
    (["--no-augment"], lambda r, ref: r[0]["loss"] != ref[0]["loss"]),
    (["--augment-strength", "0.5"], lambda r, ref: r[0]["loss"] != ref[0]["loss"]),
    (["--augment-width", "0.2"], lambda r, ref: r[0]["loss"] != ref[0]["loss"]),
    (["--grad-clip", "0.01"], lambda r, ref: r[1]["loss"] != ref[1]["loss"]),
    (["--embedding-dim", "16"], lambda r, ref: r[0]["supcon"] != ref[0]["supcon"]),
    (["--lr-head", "0.01"], lambda r, ref: r[0]["lr_head"] > ref[0]["lr_head"]),
    (["--seed", "1"], lambda r, ref: r[0]["loss"] != ref[0]["loss"]),
    (["--emb-temperature", "0.2"], lambda r, ref: r[0]["supcon"] != ref[0]["supcon"]),
    (["--weight-decay", "0.5"], lambda r, ref: r[1]["loss"] != ref[1]["loss"]),
    (["--dropout", "0.5"], lambda r, ref: r[0]["loss"] != ref[0]["loss"]),
    (["--lr-backbone", "0.0001"], lambda r, ref: r[0]["lr_backbone"] < ref[0]["lr_backbone"]),
    (["--warmup-frac", "0.5"], lambda r, ref: r[0]["lr_head"] < ref[0]["lr_head"]),
    (["--mixed-precision", "bf16"], lambda r, ref: r[0]["loss"] != ref[0]["loss"]),
])
def test_flag_has_visible_effect(workdir: Path, in_process_reference: list[dict], flags: list[str], check) -> None:
    name = "flag" + "".join(f.strip("-") for f in flags).replace(".", "_")
    result = train_in_process(workdir, name, *flags)
    assert check(result, in_process_reference), result[:2]


def test_two_channel_fit_trains_exports_and_predicts_from_both_fits(workdir: Path, tmp_path: Path) -> None:
    """--fit tight+em: the cache holds (2, S, S) images, the model takes 2 channels, and the export renders
    both fits again for inference (the em channel from the font's metrics)."""
    import numpy as np

    from glyph_train.cache.raster import RenderParams, render
    from glyph_train.cli import main
    from glyph_train.inference.predictor import Predictor

    train(workdir, "tight_em", "--wandb-mode", "disabled", "--fit", "tight+em", "--epochs", "1")
    export = workdir / "tight_em" / "export"
    config = json.loads((export / "config.json").read_text())
    assert config["fit"] == "tight+em" and config["in_chans"] == 2
    predictor = Predictor(export)
    contours = '[[["moveTo",[0,0]],["lineTo",[400,0]],["lineTo",[200,600]],["closePath",null]]]'
    from glyph_train.corpus.font_rows import EmBox
    em = EmBox(1000, 900, -300)
    done = predictor.render([(0, contours, em)])
    assert done.images.shape == (1, 2, 32, 32)
    for channel, fit in enumerate(("tight", "em")):
        np.testing.assert_array_equal(done.images[0, channel], render(contours, RenderParams(32, fit), em))
    assert predictor.predict(done.images).probs.shape == (1, config["num_classes"])
    out = tmp_path / "m.json"
    assert main(["evaluate", "--checkpoint", str(export), "--db", str(workdir / "glyphs.db"), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["num_queries"] > 0


def test_evaluate_an_export_on_another_db(workdir: Path, reference: Path, tmp_path: Path) -> None:
    from glyph_train.cli import main
    from tests.dbfactory import LATIN

    other = write_db(tmp_path / "other.db", latin=LATIN + "ÆØ", arabic=())  # Æ, Ø: labels the model never saw
    before = other.path.read_bytes()
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--checkpoint", str(reference / "export"), "--db", str(other.path),
                 "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())
    assert set(metrics) >= {"top1", "top5", "hit_at_1", "hit_at_5", "hit_at_10", "precision_at_1", "map_at_r",
                            "effect_size", "num_queries", "by_char_class"}
    assert metrics["unknown_labels"] == ["198_isol", "216_isol"]
    assert metrics["num_unknown_labels"] == 2 * len({f for f in other.fonts})
    assert metrics["num_queries"] > 0 and set(metrics["by_char_class"]) >= {"latin", "digit"}
    assert other.path.read_bytes() == before


def test_cosine_schedule_spans_every_optimizer_step_with_a_partial_accumulation(workdir: Path,
                                                                                 in_process_reference: list[dict]) -> None:
    batches = [r for r in in_process_reference if "val" in r][0]["step"]  # grad_accum 1: one step per batch
    accum = next(a for a in (2, 3, 4, 5) if batches % a)  # the epoch ends in a partial accumulation
    result = train_in_process(workdir, "lr_partial_accum", "--grad-accum", str(accum), "--log-interval", "1")
    lr = {r["step"]: r["lr_head"] for r in result if "lr_head" in r}  # the LR set after step k, used by k + 1
    total = 2 * math.ceil(batches / accum)  # Accelerate also steps at the end of each epoch
    assert max(lr) == total == result[-1]["step"]
    assert all(lr[k] > 0 for k in range(1, total)), f"steps train at LR 0: {lr}"  # the last step's LR is lr[total-1]
    assert lr[total] == 0.0  # and the cosine ends exactly with the run


def _train_rows(root: Path) -> int:
    """Training rows of the reference run's cache: --cache-dir holds one cache per fingerprint, and other tests
    add theirs beside it; the reference's is the one made with common_args' defaults."""
    from glyph_train.cache.reader import INFO_FILE, load_prepared

    def is_reference(info: dict) -> bool:
        flt = info["filter"]
        return (info["params"]["img_size"] == 32 and info["params"]["fit"] == "tight" and info["seed"] == 0
                and info["split"] == "font" and flt["limit"] is None and flt["labels"] is None
                and flt["char_classes"] is None and not flt["exclude_shaped"] and flt["min_label_count"] == 1)

    rows = {len(load_prepared(p).train) for p in (root / "cache").iterdir()
            if (p / INFO_FILE).is_file() and is_reference(json.loads((p / INFO_FILE).read_text()))}
    assert len(rows) == 1, rows
    return rows.pop()


def _refused(res: subprocess.CompletedProcess, run: Path, rows: int, global_batch: int) -> None:
    assert res.returncode != 0
    errors = {line for line in res.stderr.splitlines() if line.startswith("glyph-train train: error:")}
    assert len(errors) == 1, res.stderr[-2000:]  # the same one line from every rank
    assert f"training split has {rows:,} rows, fewer than one global batch of {global_batch:,}" in errors.pop()
    assert not (run / "export").exists() and not (run / "checkpoints").exists()


def test_batch_larger_than_training_set_is_refused(workdir: Path, reference: Path) -> None:
    rows = _train_rows(workdir)
    cmd = [sys.executable, "-m", "glyph_train.train",
           *common_args(workdir, "too_big_batch", "--wandb-mode", "disabled", "--batch-size", str(rows + 1))]
    res = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    _refused(res, workdir / "too_big_batch", rows, rows + 1)
    assert "Traceback" not in res.stderr


def test_class_balanced_batches_under_one_global_batch_on_two_processes_are_refused(workdir: Path,
                                                                                    reference: Path) -> None:
    rows = _train_rows(workdir)
    batch = rows - rows % 4  # one process's batch fits, two processes' do not: 0 steps each
    assert rows < 2 * batch
    launcher = [*ACCELERATE, "--config_file", str(REPO / "accelerate_configs/cpu_multiprocess.yaml")]
    cmd = [*launcher, "-m", "glyph_train.train",
           *common_args(workdir, "balanced_too_big", "--wandb-mode", "disabled", "--classes-per-batch", "4",
                        "--batch-size", str(batch))]
    res = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    _refused(res, workdir / "balanced_too_big", rows, 2 * batch)


def test_compiled_run_exports_plain_weights_and_resumes(workdir: Path, tmp_path: Path) -> None:
    """--compile wraps the model in torch.compile; the export must still hold the plain module's weights (no
    `_orig_mod.` keys) for inference, and a compiled run resumes from its own checkpoint."""
    from safetensors.torch import load_file

    from glyph_train.inference.predictor import Predictor

    res = train(workdir, "compiled", "--wandb-mode", "disabled", "--compile", "--epochs", "1")
    assert "torch.compile inductor" in res.stdout + res.stderr
    export = workdir / "compiled" / "export"
    keys = [k for f in export.glob("*.safetensors") for k in load_file(f)]
    assert keys and not [k for k in keys if "_orig_mod" in k]
    assert Predictor(export).predict(__import__("numpy").zeros((2, 32, 32), "uint8")).probs.shape[0] == 2
    res = train(workdir, "compiled", "--wandb-mode", "disabled", "--compile", "--epochs", "2", "--resume", "auto")
    assert "resumed at epoch 1" in res.stdout + res.stderr


def test_others_per_label_trains_one_other_class_and_keeps_it_out_of_the_metrics(workdir: Path, tmp_path: Path) -> None:
    """--labels L --others-per-label 2: every other label of the DB sends two glyphs to one extra class
    `<other>`; the export knows it; validation scores the same labelled rows as a run without it (the other
    rows count as unknown labels: no top-k, no retrieval query) instead of treating `<other>` as a letter."""
    from glyph_train.model.export import load_export

    labels = "65_isol,66_isol,97_isol,98_isol,48_isol,1576_init,1576_fina,1604_medi"
    base = ["--wandb-mode", "disabled", "--labels", labels, "--epochs", "1", "--save-every", "0"]
    train(workdir, "only_labels", *base)
    train(workdir, "with_others", *base, "--others-per-label", "2")
    _, names, config = load_export(workdir / "with_others" / "export")
    assert "<other>" in names and sorted(set(names) - {"<other>"}) == sorted(labels.split(","))
    # the prior label-font divides P(other) by: other rows over the mean rows of a label (no sampler here)
    [cache] = [json.loads(p.read_text())["labels"] for p in (workdir / "cache").glob("*/labels.json")
               if "<other>" in p.read_text()]
    train_rows = {e["name"]: e["train"] for e in cache}
    mean_label = (sum(train_rows.values()) - train_rows["<other>"]) / (len(train_rows) - 1)
    assert config["other_prior_ratio"] == pytest.approx(train_rows["<other>"] / mean_label)
    plain, others = final_metrics(workdir / "only_labels"), final_metrics(workdir / "with_others")
    assert plain["num_unknown_labels"] == 0 < others["num_unknown_labels"]
    assert others["num_queries"] == plain["num_queries"] > 0
    # evaluate on the DB with the same selection: the other rows are left out of the scores there too
    m = tmp_path / "m.json"
    res = subprocess.run([sys.executable, "-m", "glyph_train.cli", "evaluate", "--checkpoint",
                          str(workdir / "with_others" / "export"), "--db", str(workdir / "glyphs.db"), "--labels", labels,
                          "--others-per-label", "2", "--out", str(m)], cwd=REPO, env=env(), capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    scored = json.loads(m.read_text())
    assert scored["num_unknown_labels"] > 0 and scored["num_queries"] > 0 and scored["unknown_labels"] == []
    # label-font with it: says how many glyphs the model finds likeliest none of its labels, never labels one <other>
    res = subprocess.run([sys.executable, "-m", "glyph_train.cli", "label-font", str(font_path(DEFAULT_FONTS[0])),
                          "--checkpoint", str(workdir / "with_others" / "export"), "--out", str(tmp_path / "l.csv")],
                         cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "likeliest none of the model's labels" in res.stdout
    rows = list(csv.DictReader((tmp_path / "l.csv").open()))
    assert rows and "<other>" not in {r["label"] for r in rows}
