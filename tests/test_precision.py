"""`--mixed-precision auto` (the default): an explicit flag wins; else what the launch configuration says
explicitly; else bf16 where the hardware has native bf16; else fp32. Launches are real `accelerate launch`es."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from glyph_train.training.distributed import cpu_bf16_flags, native_bf16, resolve_mixed_precision
from tests.dbfactory import DEFAULT_FONTS, write_db

REPO = Path(__file__).resolve().parents[1]
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
ONE_CPU_PROCESS = {"compute_environment": "LOCAL_MACHINE", "distributed_type": "NO", "num_machines": 1,
                   "machine_rank": 0, "num_processes": 1, "use_cpu": True, "main_training_function": "main"}


def env() -> dict[str, str]:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1",
         "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for key in ("GLYPH_TRAIN_NUM_PROCESSES", "ACCELERATE_MIXED_PRECISION"):
        e.pop(key, None)
    return e


def launch_config(path: Path, **settings) -> Path:
    path.write_text(yaml.safe_dump({**ONE_CPU_PROCESS, **settings}))
    return path


@pytest.mark.parametrize("flags, expected", [
    ("fpu vme sse avx2 avx512f avx512_bf16 avx512_vnni", ["avx512_bf16"]),
    ("fpu avx512_bf16 amx_tile amx_bf16 amx_int8", ["amx_bf16", "avx512_bf16"]),
    ("fpu sse sse2 avx avx2 fma", []),
])
def test_cpu_bf16_flags_read_the_flags_line(flags: str, expected: list[str]) -> None:
    cpuinfo = f"processor\t: 0\nvendor_id\t: X\nmodel name\t: amx_bf16 in a name is no flag\nflags\t\t: {flags}\n"
    assert cpu_bf16_flags(cpuinfo) == expected


def test_explicit_flag_wins_and_a_plain_process_honours_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # set on purpose: no `accelerate launch` parent
    assert resolve_mixed_precision("no") == ("no", "--mixed-precision")
    assert resolve_mixed_precision("fp16") == ("fp16", "--mixed-precision")
    assert resolve_mixed_precision("auto") == ("bf16", "ACCELERATE_MIXED_PRECISION")
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION")
    native, why = native_bf16()
    assert resolve_mixed_precision("auto") == ("bf16" if native else "no", f"auto: {why}")


def test_auto_defers_only_to_what_the_launch_states(tmp_path: Path) -> None:
    probe = str(REPO / "tests" / "_precision_probe.py")
    silent = launch_config(tmp_path / "silent.yaml")  # no mixed_precision key: accelerate still exports "no"
    bf16 = launch_config(tmp_path / "bf16.yaml", mixed_precision="bf16")
    fp32 = launch_config(tmp_path / "fp32.yaml", mixed_precision="no")
    native, why = native_bf16()
    cases = {
        (str(silent), "auto"): ("bf16" if native else "no", f"auto: {why}"),
        (str(bf16), "auto"): ("bf16", f"launch config {bf16}"),
        (str(fp32), "auto"): ("no", f"launch config {fp32}"),
        (str(bf16), "no"): ("no", "--mixed-precision"),
        (f"{bf16} --mixed_precision no", "auto"): ("no", "accelerate launch --mixed_precision"),
    }
    procs = {case: subprocess.Popen([*ACCELERATE, "--config_file", *case[0].split(), probe, case[1]], cwd=REPO,
                                    env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for case in cases}
    for case, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        (line,) = [ln for ln in out.splitlines() if ln.startswith("resolved\t")]
        assert tuple(line.split("\t")[1:]) == cases[case], case


def test_launch_config_bf16_trains_evaluates_and_exports(tmp_path: Path) -> None:
    """The launch YAML's bf16 reaches the trainer (it used to be overridden by the trainer's default "no"),
    and a bf16 run exports float32 weights that `evaluate` reads."""
    info = write_db(tmp_path / "glyphs.db", fonts=DEFAULT_FONTS[:5], latin="ABCDEFGH", arabic=())
    config = launch_config(tmp_path / "bf16.yaml", mixed_precision="bf16")
    run = tmp_path / "run"
    cmd = [*ACCELERATE, "--config_file", str(config), "-m", "glyph_train.train", "--db", str(info.path),
           "--cache-dir", str(tmp_path / "cache"), "--val-frac", "0.3", "--model", "test_vit", "--img-size", "32",
           "--epochs", "1", "--batch-size", "8", "--num-workers", "0", "--wandb-mode", "disabled",
           "--out-dir", str(run)]
    res = subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"mixed precision bf16 (launch config {config})" in res.stdout
    from glyph_train.evaluation.metrics import describe_search
    assert f"retrieval search: {describe_search()}" in res.stdout
    assert yaml.safe_load((run / "config.yaml").read_text())["mixed_precision"] == "bf16"

    import torch
    from safetensors.torch import load_file

    from glyph_train.cli import main

    assert {t.dtype for t in load_file(run / "export" / "model.safetensors").values()} == {torch.float32}
    out = tmp_path / "metrics.json"
    assert main(["evaluate", "--checkpoint", str(run / "export"), "--db", str(info.path), "--out", str(out)]) == 0
    assert "top1" in out.read_text()
