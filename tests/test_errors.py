"""One-line errors, never tracebacks, for where commands write and for bad flags (issue 6 §5).

Tests run as root (here and in CI), and root writes through any chmod: read-only and full disks are real
filesystems here, tmpfs mounts (a tiny `size=` for a full disk, `remount,ro` for a read-only one). Where
mounting is impossible (no CAP_SYS_ADMIN) those tests skip and say so; /dev/full still gives a real ENOSPC.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from glyph_train.cli import main
from tests.dbfactory import write_db

REPO = Path(__file__).resolve().parents[1]
ABRIL = Path(str(files("fontpkg_abril_fatface") / "files" / "AbrilFatface-Regular.ttf"))


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("db") / "glyphs.db"
    write_db(path)
    return path


@pytest.fixture(scope="module")
def cache(db: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "c32"
    assert main(["prepare", "--db", str(db), "--out", str(out), "--img-size", "32", "--num-proc", "1"]) == 0
    return out


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, size, read_only=False, files={}) -> a real tmpfs folder under tmp_path; unmounted after."""
    mounted: list[Path] = []

    def mount(name: str, size: str, read_only: bool = False, files: dict[str, bytes] | None = None) -> Path:
        path = tmp_path / name
        path.mkdir()
        reason = _mount(["-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
        if reason:
            pytest.skip(f"cannot mount a tmpfs here ({reason}); these tests need root with CAP_SYS_ADMIN, as in CI")
        mounted.append(path)
        for rel, data in (files or {}).items():
            (path / rel).write_bytes(data)
        if read_only:
            assert not _mount(["-o", "remount,ro", str(path)])
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)  # lazy: never fails on a busy mount


def _mount(args: list[str]) -> str | None:
    """None when mounted, else why not."""
    if shutil.which("mount") is None:
        return "no mount command"
    res = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if res.returncode == 0 else (res.stderr.strip() or f"mount exited {res.returncode}")


def error_line(capsys, command: str) -> str:
    """The command's one `glyph-train CMD: error:` line, asserted to end its stderr (above it: progress bars)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    errors = [line for line in lines if line.startswith("glyph-train ")]
    assert errors == lines[-1:] and errors[0].startswith(f"glyph-train {command}: error: "), "\n".join(lines)
    return errors[0]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- disk full


def test_disk_full_while_writing_the_cache(db, tmpfs, capsys):
    """The free-space check passes (room for the images) but the cache's Arrow files need more: the write
    itself hits ENOSPC deep inside pyarrow/datasets."""
    from glyph_train.corpus.db import GlyphFilter, select_glyphs

    rows = len(select_glyphs(db, GlyphFilter()).glyphs)
    estimate = 2 * rows * 32 * 32  # what prepare's check asks for; Arrow offsets and metadata add ~30%
    disk = tmpfs("disk", f"{int(estimate * 1.1) // 1024}k")
    out = disk / "cache"
    rc = main(["prepare", "--db", str(db), "--out", str(out), "--img-size", "32", "--num-proc", "1"])
    err = error_line(capsys, "prepare")
    assert rc == 2 and f"{out}: no space left on the device" in err and "choose another --out" in err
    assert list(disk.iterdir()) == []  # no staging directory left behind


def test_disk_full_while_writing_the_sheet_keeps_the_earlier_one(db, tmpfs, capsys):
    disk = tmpfs("disk", "64k", files={"sheet.png": b"the earlier sheet"})
    out = disk / "sheet.png"
    rc = main(["show", "--db", str(db), "--random", "100", "--out", str(out)])
    err = error_line(capsys, "show")
    assert rc == 2 and f"{out}: no space left on the device" in err and "--out" in err
    assert out.read_bytes() == b"the earlier sheet" and [p.name for p in disk.iterdir()] == ["sheet.png"]


def test_disk_full_while_adding_to_a_db(tmpfs, capsys):
    out = tmpfs("disk", "64k") / "glyphs.db"
    rc = main(["build-db", str(out), str(ABRIL), "--jobs", "1"])  # SQLite: "database or disk is full"
    err = error_line(capsys, "build-db")
    assert rc == 2 and f"{out}: no space left on the device" in err and "OUT.db" in err


def test_disk_full_while_checkpointing(cache, tmpfs):
    """safetensors reports ENOSPC only as text ("os error 28"); through `python -m glyph_train.train`, the
    entry point `accelerate launch -m glyph_train.train` runs."""
    run_dir = tmpfs("disk", "256k") / "run"  # config.yaml and metrics fit, the checkpoint does not
    cmd = [sys.executable, "-m", "glyph_train.train", "--data", str(cache), "--model", "test_vit", "--epochs", "1",
           "--max-steps", "1", "--batch-size", "16", "--num-workers", "0", "--wandb-mode", "disabled",
           "--out-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("glyph-train train: error: ")]
    assert len(lines) == 1 and f"{run_dir}: no space left on the device" in lines[0], res.stderr[-3000:]
    assert "--out-dir" in lines[0]


def test_disk_full_without_a_file_name_names_the_output(tmp_path):
    """/dev/full: a real ENOSPC (no mount needed) that, like most writers' errors, carries no file name."""
    from glyph_train import outputs

    outputs.reset()
    out = outputs.check_output_dir(tmp_path / "cache", "--out")
    with pytest.raises(OSError) as caught:
        with open("/dev/full", "wb") as f:
            f.write(b"x" * 65536)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename is None
    line = outputs.write_error_line(caught.value)
    assert line.startswith(f"{out}: no space left on the device") and "choose another --out" in line
    outputs.reset()
    assert outputs.write_error_line(caught.value) is None  # no idea which file: keep the traceback
    assert outputs.write_error_line(ValueError("a bug")) is None


def test_disk_full_without_a_file_name_names_the_output_on_the_full_disk(tmp_path, tmpfs):
    """`train --db` writes a run directory and a cache: the full one is named."""
    from glyph_train import outputs

    outputs.reset()
    outputs.check_output_dir(tmp_path / "run", "--out-dir")
    cache = outputs.check_output_dir(tmpfs("disk", "64k") / "cache")
    (cache.parent / "filler").write_bytes(b"x" * 60_000)
    with pytest.raises(OSError) as caught:
        with open("/dev/full", "wb") as f:
            f.write(b"x" * 65536)
    assert outputs.write_error_line(caught.value).startswith(f"{cache}: no space left on the device (now ")
    outputs.reset()


def test_torch_save_on_a_full_disk_is_named(tmpfs):
    """torch.save says only "unexpected pos ..." on a full disk: the nearly full output names the cause."""
    import torch

    from glyph_train import outputs

    outputs.reset()
    run_dir = outputs.check_output_dir(tmpfs("disk", "64k") / "run", "--out-dir")
    run_dir.mkdir()
    with pytest.raises(RuntimeError) as caught:
        torch.save(torch.zeros(100_000), run_dir / "optimizer.bin")
    line = outputs.write_error_line(caught.value)
    assert line.startswith(f"{run_dir}: no space left on the device") and "RuntimeError" in line
    outputs.reset()


# ---------------------------------------------------------------------------------------------- read-only


def test_read_only_output_folder(db, cache, tmpfs, capsys):
    ro = tmpfs("ro", "1m", read_only=True)
    for command, args in (("prepare", ["prepare", "--db", str(db), "--out", str(ro / "cache"), "--img-size", "32"]),
                          ("show", ["show", "--db", str(db), "--random", "4", "--out", str(ro / "sheet.png")]),
                          ("train", ["train", "--data", str(cache), "--out-dir", str(ro / "run")])):
        assert main(args) == 2
        err = error_line(capsys, command)
        assert f"cannot write in {ro} (read-only filesystem)" in err and "choose another --" in err, err
    assert list(ro.iterdir()) == []


def test_read_only_cache_is_still_reused(db, tmpfs, capsys):
    disk = tmpfs("disk", "4m")
    args = ["prepare", "--db", str(db), "--out", str(disk / "cache"), "--img-size", "16", "--num-proc", "1"]
    assert main(args) == 0
    assert not subprocess.run(["mount", "-o", "remount,ro", str(disk)]).returncode
    capsys.readouterr()
    assert main(args) == 0 and "cache hit" in capsys.readouterr().out
    assert main([*args, "--val-frac", "0.2"]) == 2  # a different cache: must be written
    assert "read-only filesystem" in error_line(capsys, "prepare")


def test_filesystem_turning_read_only_mid_write_names_the_output(tmpfs):
    """An EROFS from a temp file beside the output (as prepare's staging dir) names the output itself."""
    from glyph_train import outputs

    outputs.reset()
    ro = tmpfs("ro", "64k", read_only=True)
    out = ro / "cache"
    outputs.declare(out, "--out")
    with pytest.raises(OSError) as caught:
        os.mkdir(ro / ".cache.tmp-123")
    assert outputs.write_error_line(caught.value) == f"{out}: the filesystem is read-only; choose another --out"
    outputs.reset()


def test_build_db_target_on_a_read_only_filesystem(tmpfs, capsys, tmp_path):
    source = tmp_path / "source.db"
    write_db(source, latin="AB", arabic=())
    ro = tmpfs("ro", "1m", read_only=True, files={"glyphs.db": source.read_bytes()})
    before = sha256(ro / "glyphs.db")
    for out in (ro / "glyphs.db", ro / "new.db"):
        assert main(["build-db", str(out), str(ABRIL), "--jobs", "1"]) == 2
        err = error_line(capsys, "build-db")
        assert f"{out}: cannot write in {ro} (read-only filesystem); choose another OUT.db" in err
    assert sha256(ro / "glyphs.db") == before and [p.name for p in ro.iterdir()] == ["glyphs.db"]


# ---------------------------------------------------------------------------------------------- paths and flags


def test_output_path_that_is_a_file_or_a_folder(db, cache, tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("precious")
    a_dir = tmp_path / "sheet.png"
    a_dir.mkdir()
    cases = [
        ("prepare", ["--db", str(db), "--out", str(a_file)], f"{a_file} is a file, but --out must be a folder"),
        ("prepare", ["--db", str(db), "--out", str(a_file / "cache")], f"{a_file} is a file, so nothing can"),
        ("train", ["--data", str(cache), "--out-dir", str(a_file)], f"{a_file} is a file, but --out-dir must"),
        ("train", ["--data", str(cache), "--out-dir", str(a_file / "run")], f"{a_file} is a file, so nothing"),
        ("show", ["--db", str(db), "--random", "4", "--out", str(a_dir)], f"{a_dir} is a folder, but --out must"),
        ("show", ["--db", str(db), "--random", "4", "--out", str(a_file / "s.png")], f"{a_file} is a file, so"),
        ("build-db", [str(a_dir), str(ABRIL)], f"{a_dir} is a folder, but OUT.db must be a file name"),
        ("build-db", [str(a_file / "g.db"), str(ABRIL)], f"{a_file} is a file, so nothing can be created"),
    ]
    for command, args, expected in cases:
        assert main([command, *args]) == 2, (command, args)
        err = error_line(capsys, command)
        assert expected in err and "choose another" in err, err
    assert a_file.read_text() == "precious" and list(a_dir.iterdir()) == []


def test_unknown_model_suggests_close_timm_names(cache, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(cache), "--model", "levit_128x", "--out-dir", str(run_dir)]) == 2
    err = error_line(capsys, "train")
    assert "--model 'levit_128x' is not a timm model; did you mean" in err and "levit_128s" in err
    assert not run_dir.exists()  # refused before anything was written

    from glyph_train.errors import GlyphTrainError
    from glyph_train.model.network import GlyphModel

    with pytest.raises(GlyphTrainError, match="resnet18"):  # also for an export made with another timm
        GlyphModel("resnet_18")


def test_labels_file_that_is_not_utf8(db, tmp_path, capsys):
    latin1 = tmp_path / "labels.txt"
    latin1.write_bytes("65_isol\n# café\n".encode("latin-1"))
    for command, out in (("prepare", tmp_path / "cache"), ("show", tmp_path / "sheet.png")):
        assert main([command, "--db", str(db), "--labels", str(latin1), "--out", str(out)]) == 2
        err = error_line(capsys, command)
        assert f"labels file {latin1} is not UTF-8 text (byte 0xe9 at offset 13); save it as UTF-8" in err
        assert not out.exists()

    from glyph_train.corpus.db import parse_label_list

    bom = tmp_path / "bom.txt"
    bom.write_bytes("\ufeff65_isol\n66_isol\n".encode("utf-8"))
    assert parse_label_list(str(bom)) == ("65_isol", "66_isol")


def test_img_size_too_large_for_the_disk(db, tmp_path, tmpfs, capsys):
    out = tmp_path / "cache"  # any disk: 557 glyphs at 100,000 px squared are terabytes
    assert main(["prepare", "--db", str(db), "--out", str(out), "--img-size", "100000"]) == 2
    err = error_line(capsys, "prepare")
    assert f"{out}: rendering" in err and "at 100000x100000 px needs about" in err and "TB but only" in err
    assert "lower --img-size" in err and not out.exists()

    small = tmpfs("small", "64k")
    assert main(["prepare", "--db", str(db), "--out", str(small / "cache"), "--img-size", "64"]) == 2
    err = error_line(capsys, "prepare")
    assert "needs about" in err and "but only 65.5 KB is free" in err and list(small.iterdir()) == []


def test_show_out_with_a_non_image_extension(db, tmp_path, capsys):
    for name, expected in (("sheet.txt", "'.txt' is not an image extension PIL can write"),
                           ("sheet", "no file extension"),
                           ("sheet.h5", "PIL cannot write this sheet as HDF5")):
        out = tmp_path / name
        assert main(["show", "--db", str(db), "--random", "4", "--out", str(out)]) == 2
        err = error_line(capsys, "show")
        assert f"{out}: {expected}" in err and ".png" in err
        assert not out.exists() and not list(tmp_path.glob(".sheet*"))
    assert main(["show", "--db", str(db), "--random", "4", "--out", str(tmp_path / "sheet.JPG")]) == 0
