"""Never lose or overwrite what the user owns (issue 6 §4): cache replacement, outputs vs inputs, Ctrl-C
during prepare, and two build-db processes adding to one DB. Real processes, signals and SQLite throughout."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dbfactory import write_db
from glyph_train.cache.prepare import prepare
from glyph_train.cache.raster import RenderParams
from glyph_train.cache.reader import load_prepared
from glyph_train.cli import main
from glyph_train.corpus.db import GlyphFilter
from glyph_train.errors import GlyphTrainError
from glyph_train.outputs import check_outputs

REPO = Path(__file__).resolve().parents[1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> Path:
    return write_db(tmp_path_factory.mktemp("db") / "glyphs.db").path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------ prepare: replace only its own


def test_rerender_refuses_a_cache_holding_user_files_and_keeps_them(db, tmp_path, capsys):
    out = tmp_path / "cache"
    prepare(db, out, RenderParams(img_size=16), "font", 0.2, 0, 1, GlyphFilter())
    shutil.copy(db, out / "glyphs.db")  # the user keeps a copy of the DB and notes in the cache folder
    (out / "notes").mkdir()
    (out / "notes" / "todo.txt").write_text("mine")
    (out / "train" / "extra.txt").write_text("mine too")
    before = digest(out / "glyphs.db")
    capsys.readouterr()
    rc = main(["prepare", "--db", str(db), "--out", str(out), "--img-size", "32", "--num-proc", "1"])
    err = one_line_error(capsys)
    assert rc == 2 and "did not write" in err and "glyphs.db" in err and "notes/" in err, err
    assert digest(out / "glyphs.db") == before and (out / "notes" / "todo.txt").read_text() == "mine"
    assert (out / "train" / "extra.txt").read_text() == "mine too"
    assert load_prepared(out).img_size == 16  # the old cache is untouched too

    # The reproduction: the DB itself lives in --out.
    rc = main(["prepare", "--db", str(out / "glyphs.db"), "--out", str(out), "--img-size", "32"])
    assert rc == 2 and "holds the --db input" in one_line_error(capsys)
    assert digest(out / "glyphs.db") == before

    for p in (out / "glyphs.db", out / "train" / "extra.txt"):
        p.unlink()
    shutil.rmtree(out / "notes")
    assert load_prepared(prepare(db, out, RenderParams(img_size=32), "font", 0.2, 0, 1, GlyphFilter()).path
                         ).img_size == 32  # only its own files: replaced
    files = json.loads((out / "prepare.json").read_text())["files"]
    on_disk = sorted((Path(d) / f).relative_to(out).as_posix() for d, _, fs in os.walk(out) for f in fs)
    assert files == on_disk and "prepare.json" in files


def test_cache_from_before_the_manifest_is_replaced_by_its_layout_only(db, tmp_path):
    out = tmp_path / "cache"
    prepare(db, out, RenderParams(img_size=16), "font", 0.2, 0, 1, GlyphFilter())
    info = json.loads((out / "prepare.json").read_text())
    del info["files"]  # as an older glyph-train wrote it
    (out / "prepare.json").write_text(json.dumps(info))
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(GlyphTrainError, match="thesis.tex"):
        prepare(db, out, RenderParams(img_size=32), "font", 0.2, 0, 1, GlyphFilter())
    (out / "thesis.tex").unlink()
    assert prepare(db, out, RenderParams(img_size=32), "font", 0.2, 0, 1, GlyphFilter()).img_size == 32


def test_a_file_dropped_into_the_cache_while_rendering_stops_the_swap(db, tmp_path, monkeypatch):
    import glyph_train.cache.prepare as prepare_mod

    out = tmp_path / "cache"
    prepare(db, out, RenderParams(img_size=16), "font", 0.2, 0, 1, GlyphFilter())
    real = prepare_mod._render_splits

    def render_then_user_writes(*args, **kw):
        result = real(*args, **kw)
        (out / "late.txt").write_text("written during the render")
        return result

    monkeypatch.setattr(prepare_mod, "_render_splits", render_then_user_writes)
    with pytest.raises(GlyphTrainError, match="late.txt"):
        prepare(db, out, RenderParams(img_size=32), "font", 0.2, 0, 1, GlyphFilter())
    assert (out / "late.txt").exists() and load_prepared(out).img_size == 16
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cache.")]


# ------------------------------------------------------------------------------ no output over an input


def test_check_outputs_sees_through_symlinks_and_hard_links(tmp_path):
    src = tmp_path / "glyphs.db"
    src.write_text("db")
    (tmp_path / "link.db").symlink_to(src)
    os.link(src, tmp_path / "hard.db")
    for out in (src, tmp_path / "link.db", tmp_path / "hard.db", tmp_path, tmp_path / "sub" / ".."):
        with pytest.raises(GlyphTrainError):
            check_outputs({"--out": out}, {"--db": src})
    check_outputs({"--out": tmp_path / "metrics.json"}, {"--db": src, "--labels": None})


def test_evaluate_show_and_prepare_refuse_to_write_over_an_input(db, tmp_path, capsys):
    copy = tmp_path / "glyphs.db"
    shutil.copy(db, copy)
    (tmp_path / "alias.db").symlink_to(copy)
    labels = tmp_path / "labels.txt"
    labels.write_text("65_isol\n66_isol\n")
    before = digest(copy), digest(labels)
    export = tmp_path / "export"  # evaluate checks its outputs before it even opens the export
    export.mkdir()
    (export / "config.json").write_text("{}")
    cases = [
        (["evaluate", "--checkpoint", str(export), "--db", str(copy), "--out", str(tmp_path / "alias.db")], "--db"),
        (["evaluate", "--checkpoint", str(export), "--db", str(copy), "--out", str(export / "config.json")],
         "--checkpoint"),
        (["evaluate", "--checkpoint", str(export), "--db", str(copy), "--labels", str(labels), "--out", str(labels)],
         "--labels"),
        (["show", "--db", str(copy), "--random", "4", "--out", str(copy)], "--db"),
        (["show", "--db", str(copy), "--labels", str(labels), "--out", str(labels)], "--labels"),
        (["prepare", "--db", str(copy), "--out", str(tmp_path)], "--db"),
        (["prepare", "--db", str(copy), "--labels", str(labels), "--out", str(labels)], "--labels"),
    ]
    for argv, flag in cases:
        rc = main(argv)
        err = one_line_error(capsys)
        assert rc == 2 and flag in err, (argv, err)
    assert (digest(copy), digest(labels)) == before


def test_build_db_refuses_an_input_font_as_its_output(tmp_path, capsys):
    from test_build_db import ABRIL

    font = tmp_path / "font.ttf"
    shutil.copy(ABRIL, font)
    before = digest(font)
    assert main(["build-db", str(font), str(tmp_path)]) == 2
    assert "is the" in one_line_error(capsys) and digest(font) == before


# ------------------------------------------------------------------------------ Ctrl-C during prepare


def big_db(path: Path, source: Path, copies: int) -> Path:
    """`copies` times the rows of `source` (fresh glyph ids): enough work to interrupt mid-render."""
    shutil.copy(source, path)
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT f_id, label, contours, joining_group, char_class FROM glyphs").fetchall()
        first = conn.execute("SELECT MAX(glyph_id) + 1 FROM glyphs").fetchone()[0]  # the users' schema: no rowid alias
        conn.executemany("INSERT INTO glyphs (glyph_id, f_id, label, contours, joining_group, char_class) "
                         "VALUES (?,?,?,?,?,?)", ((first + i, *row) for i, row in enumerate(rows * (copies - 1))))
    return path


@pytest.mark.parametrize("attempt", range(4))  # the old hang came 1-4 times in 5: several tries make it show
def test_ctrl_c_during_parallel_prepare_stops_with_130_and_no_temp_dir(db, tmp_path, attempt):
    source = big_db(tmp_path / "big.db", db, 60)
    out = tmp_path / "cache"
    cmd = [sys.executable, "-m", "glyph_train.cli", "prepare", "--db", str(source), "--out", str(out),
           "--img-size", "192", "--num-proc", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)  # its own group, as a terminal's foreground job
    try:
        deadline = time.time() + 120
        while "render train" not in log.read_text() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)  # tqdm's bar: rendering has started in the workers
        time.sleep(0.5 + attempt * 0.7)  # workers busy mid-shard
        assert proc.poll() is None, "prepare finished before it could be interrupted: " + log.read_text()[-2000:]
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        t0 = time.time()
        rc = proc.wait(timeout=15)
        assert rc == 130 and time.time() - t0 < 10, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert log.read_text().splitlines()[-1].endswith("glyph-train prepare: interrupted")
    time.sleep(0.2)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".cache.")]
    assert not out.exists()


def test_a_pool_worker_answers_with_one_atomic_pipe_write_however_big_its_shard(tmp_path, monkeypatch):
    """Why the Ctrl-C test above hung now and then: a worker killed while writing its multi-MB result into
    the pool's pipe left half a message, and the pool's result thread waited for the rest forever. Workers
    now write the shard to a file and answer with its path: one write of at most PIPE_BUF bytes, which the
    kernel never splits."""
    import pickle
    import select

    import numpy as np

    from glyph_train.cache import prepare as prepare_mod

    big = (np.ones((200, 192, 192), np.uint8), {"label": list(range(200))}, "report")  # 7 MB, as at --img-size 192
    monkeypatch.setattr(prepare_mod, "_render_shard", lambda task: big)
    path = prepare_mod._render_shard_to_file(("db", {}, [], str(tmp_path / "train-000000.pkl")))
    assert len(pickle.dumps(path, protocol=pickle.HIGHEST_PROTOCOL)) + 4 <= select.PIPE_BUF  # + the length header
    images, cols, report = prepare_mod._load_shard(path)
    assert np.array_equal(images, big[0]) and cols == big[1] and report == "report"
    assert not list(tmp_path.iterdir())  # read once, then gone


# ------------------------------------------------------------------------------ two build-db processes


def test_two_build_db_processes_adding_to_one_db_both_succeed(tmp_path):
    from test_build_db import ABRIL, CAVEAT, glyphs_by_label, rows

    db = tmp_path / "shared.db"
    fonts = [str(ABRIL), str(CAVEAT)]  # 3 faces (Caveat: 2 named instances)
    cmd = [sys.executable, "-m", "glyph_train.cli", "build-db", str(db)]
    opts = ["--charset", "latin,digit", "--jobs", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(cmd + order + opts, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for order in (fonts, fonts[::-1])]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    for rc, out, err in results:
        assert rc == 0 and "Traceback" not in err, err[-2000:]
    added = [int(out.split("added ")[1].split()[0]) for _, out, _ in results]
    assert sum(added) == 3, [out for _, out, _ in results]  # each face added once, by one of them

    reference = tmp_path / "reference.db"
    assert main(["build-db", str(reference), *fonts, "--charset", "latin,digit", "--jobs", "1"]) == 0
    faces = rows(db, "SELECT file_hash FROM fonts")
    assert sorted(faces) == sorted(rows(reference, "SELECT file_hash FROM fonts")) and len(faces) == 3
    for (f_id,) in faces:  # every face whole: the same glyphs as a single build-db wrote
        assert glyphs_by_label(db, f_id) == glyphs_by_label(reference, f_id)
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT glyph_id) FROM glyphs") == \
        rows(reference, "SELECT COUNT(*), COUNT(*) FROM glyphs")
