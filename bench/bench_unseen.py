"""The honest benchmark: how well a trained model labels glyphs of font families it has never seen.

A fixed list of held-out families (below: Arabic naskh, kufi, ruqaa, nastaliq and display styles, and
Latin serif, sans, slab, mono, display, script and handwriting) is kept out of training entirely; every
other family of the DB trains. A held-out family also takes out every family whose name extends it
("Reem Kufi" takes "Reem Kufi Fun", "Aref Ruqaa" takes "Aref Ruqaa Ink"): a variant of the same design
would leak it. Label sets (--sets; a labels file of one's own works too, named by its stem):
  core  launch/core_labels.txt (ASCII letters and digits, every positional form of U+0621–U+064A)
  label-font  launch/label_font_labels.txt (core, and classes for what took core labels in label-font: the
        digits' figure variants, Arabic-Indic digits, Persian and Urdu letters, Latin look-alikes)
  full  every label drawn by at least 20 training families (Latin extended, Greek, Cyrillic, digits,
        punctuation, Arabic forms)
For each set: training and held-out DBs are written under --out (the source DB is only read), the trainer
runs with launch/recipe.yaml, the quickstart's recipe (extra flags after the script's own go to the
trainer and override it), and
`glyph-train evaluate` scores the export on the held-out families: top1, top1_equiv, top5, hit@10, MAP@R,
overall, for Latin, Arabic and digits, and per held-out family (results.md, results.json).

    python bench/bench_unseen.py --out runs/unseen                       # builds OUT/glyphs.db first
    python bench/bench_unseen.py --out runs/unseen_big --fontsource arabic,default   # + 184 Latin families
    python bench/bench_unseen.py --db data/glyphs.db --out runs/unseen --sets core --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from glyph_train.cache.splits import family_key  # noqa: E402
from glyph_train.corpus.db import parse_label_list  # noqa: E402
from glyph_train.corpus.fontsource import package_name  # noqa: E402

CORE_LABELS = REPO / "launch" / "core_labels.txt"
LABEL_FILES = {"core": CORE_LABELS, "label-font": REPO / "launch" / "label_font_labels.txt"}
FULL_MIN_FAMILIES = 20

# family -> style. Never trained on; all come from npm's @fontsource (none is in the fontpkg corpus).
HELD_OUT_ARABIC = {
    "Scheherazade New": "naskh",
    "Lateef": "naskh",
    "Markazi Text": "naskh",
    "Reem Kufi": "kufi",  # + Reem Kufi Fun
    "Kufam": "kufi",
    "Aref Ruqaa": "ruqaa",  # + Aref Ruqaa Ink
    "Noto Nastaliq Urdu": "nastaliq",
    "Lalezar": "display",
    "Lemonada": "display",
    "El Messiri": "display",
    "Vazirmatn": "sans",
}
HELD_OUT_LATIN = {
    "Crimson Text": "serif", "Libre Caslon Text": "serif", "Cardo": "serif", "Gelasio": "serif",
    "Karla": "sans", "Mulish": "sans", "Barlow": "sans", "Cabin": "sans", "Manrope": "sans",
    "Bree Serif": "slab", "Rokkitt": "slab",
    "Inconsolata": "mono", "Courier Prime": "mono", "Share Tech Mono": "mono",
    "Anton": "display", "Bangers": "display", "Cinzel": "display", "Comfortaa": "display",
    "Sacramento": "script", "Parisienne": "script", "Allura": "script",
    "Shadows Into Light": "handwriting", "Patrick Hand": "handwriting", "Gochi Hand": "handwriting",
}
HELD_OUT = {**HELD_OUT_ARABIC, **HELD_OUT_LATIN}

# The recipe the quickstart trains (launch/recipe.yaml); flags given after the script's own override it.
RECIPE = ["--config", str(REPO / "launch" / "recipe.yaml"), "--log-interval", "50", "--seed", "0"]
REPORT_KEYS = ("top1", "top1_equiv", "top5", "hit_at_10", "map_at_r")
TARGETS = {"core": {"top1": 0.93, "arabic top1": 0.88, "hit_at_10": 0.98, "map_at_r": 0.70},
           "full": {"top1_equiv": 0.90}}


def held_out_of(family: str | None) -> str | None:
    """The held-out family this DB family belongs to (itself, or a name that extends it), else None."""
    key = family_key(family or "")
    for name in HELD_OUT:
        held = family_key(name)
        if key == held or key.startswith(held + " "):
            return name
    return None


def build_corpus(db: Path, fontsource: str = "arabic") -> None:
    """fontpkg + the @fontsource sets named (every Arabic family; `arabic,default` adds 184 Latin families)
    + the held-out Latin families."""
    names = ",".join([fontsource, *(package_name(f) for f in HELD_OUT_LATIN)])
    run([sys.executable, "-m", "glyph_train.cli", "build-db", str(db), "--fontpkg", "--fontsource", names])


def split_fonts(db: Path) -> tuple[dict[str, str | None], dict[str, str]]:
    """(font hash -> held-out family or None, font hash -> family key); fails if a held-out family is absent."""
    with _open_ro(db) as conn:
        fonts = conn.execute("SELECT file_hash, family_name FROM fonts").fetchall()
    held = {h: held_out_of(f) for h, f in fonts}
    missing = sorted(set(HELD_OUT) - set(held.values()))
    if missing:
        sys.exit(f"bench_unseen: {db} lacks held-out families {', '.join(missing)}; build it with "
                 f"this script (no --db) or add them with build-db --fontsource")
    return held, {h: family_key(f or h) for h, f in fonts}


def full_labels(db: Path, held: dict[str, str | None], keys: dict[str, str]) -> list[str]:
    """Labels drawn by at least FULL_MIN_FAMILIES training families."""
    families: dict[str, set[str]] = {}
    with _open_ro(db) as conn:
        for label, f_id in conn.execute("SELECT DISTINCT label, f_id FROM glyphs"):
            if f_id in held and held[f_id] is None:
                families.setdefault(label, set()).add(keys[f_id])
    return sorted(label for label, fams in families.items() if len(fams) >= FULL_MIN_FAMILIES)


def write_subset(src: Path, dst: Path, fonts: list[str], labels: list[str] | None) -> None:
    """A glyphs.db holding only these fonts' rows of these labels (all labels: None; the source is attached
    read-only)."""
    tmp = dst.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.execute("ATTACH DATABASE ? AS src", (f"{src.resolve().as_uri()}?mode=ro",))
        schema = conn.execute("SELECT name, sql FROM src.sqlite_master WHERE type = 'table' "
                              "AND name IN ('fonts', 'glyphs')").fetchall()
        for _, sql in schema:
            conn.execute(sql)
        conn.execute("CREATE TEMP TABLE keep_fonts (h TEXT PRIMARY KEY)")
        conn.execute("CREATE TEMP TABLE keep_labels (l TEXT PRIMARY KEY)")
        conn.executemany("INSERT INTO keep_fonts VALUES (?)", ((h,) for h in fonts))
        conn.executemany("INSERT INTO keep_labels VALUES (?)", ((lab,) for lab in labels or ()))
        conn.execute("INSERT INTO main.fonts SELECT * FROM src.fonts WHERE file_hash IN (SELECT h FROM keep_fonts)")
        conn.execute("INSERT INTO main.glyphs SELECT * FROM src.glyphs WHERE f_id IN (SELECT h FROM keep_fonts)"
                     + (" AND label IN (SELECT l FROM keep_labels)" if labels is not None else ""))
        conn.commit()
    finally:
        conn.close()
    os.replace(tmp, dst)


def run_set(name: str, labels: list[str], src: Path, out: Path, held: dict[str, str | None],
            recipe: list[str], eval_limit: int | None = None) -> dict:
    work = out / name
    work.mkdir(parents=True, exist_ok=True)
    labels_file = work / "labels.txt"
    labels_file.write_text("\n".join(labels) + "\n")
    # --others-per-label trains on glyphs of every label (as one other class): its training DB keeps them all
    others = any(a.startswith("--others-per-label") for a in recipe)
    train_db, heldout_db = work / ("train_all.db" if others else "train.db"), work / "heldout.db"
    if not (train_db.exists() and heldout_db.exists()):
        write_subset(src, train_db, [h for h, f in held.items() if f is None], None if others else labels)
        write_subset(src, heldout_db, [h for h, f in held.items() if f is not None], labels)
    run_dir = work / "run"
    tic = time.perf_counter()
    run([sys.executable, "-m", "glyph_train.train", "--db", str(train_db), "--labels", str(labels_file),
         "--cache-dir", str(work / "cache"), "--out-dir", str(run_dir), "--wandb-mode", "offline",
         *(() if "--resume" in recipe else ("--overwrite",)), *recipe])  # a rerun trains afresh; the old run is moved aside
    train_s = time.perf_counter() - tic
    metrics_path = work / "heldout_metrics.json"
    run([sys.executable, "-m", "glyph_train.cli", "evaluate", "--checkpoint", str(run_dir / "export"),
         "--db", str(heldout_db), "--labels", str(labels_file), "--out", str(metrics_path),
         *(["--limit", str(eval_limit)] if eval_limit else [])])
    metrics = json.loads(metrics_path.read_text())
    return {"set": name, "labels": len(labels), "train_wall_s": round(train_s, 1), "metrics": metrics}


def table(result: dict) -> str:
    """Markdown: overall / latin / arabic / digit rows, then one row per held-out family."""
    m = result["metrics"]
    lines = [f"### {result['set']} labels ({result['labels']}), training {result['train_wall_s']:.0f} s "
             f"(prepare + train + validation)", "",
             "| | " + " | ".join(REPORT_KEYS) + " | glyphs |", "|---" * (len(REPORT_KEYS) + 2) + "|"]

    def row(title: str, values: dict) -> str:
        cells = [f"{values[k]:.3f}" if isinstance(values.get(k), float) else "–" for k in REPORT_KEYS]
        count = values.get("num_queries", 0) + values.get("num_without_positive", 0)
        return f"| {title} | " + " | ".join(cells) + f" | {count} |"

    lines.append(row("**overall**", m))
    for cc in ("latin", "arabic", "digit"):
        if cc in m["by_char_class"]:
            lines.append(row(cc, m["by_char_class"][cc]))
    for family, values in sorted(m.get("by_family", {}).items()):
        style = HELD_OUT.get(held_out_of(family) or "", "")
        lines.append(row(f"{family} ({style})", values))
    checks = []
    for key, target in TARGETS.get(result["set"], {}).items():
        cc, _, metric = key.rpartition(" ")
        value = (m["by_char_class"].get(cc, {}) if cc else m).get(metric)
        if isinstance(value, float):
            checks.append(f"{key} {value:.3f} {'≥' if value >= target else '<'} {target} "
                          f"({'met' if value >= target else 'NOT met'})")
    if checks:
        lines += ["", "Targets: " + "; ".join(checks)]
    return "\n".join(lines)


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def _open_ro(db: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="glyphs.db with the held-out families (default: build OUT/glyphs.db)")
    parser.add_argument("--out", type=Path, default=Path("runs/unseen"))
    parser.add_argument("--sets", default="core,full",
                        help="label sets to run, comma-separated: core, label-font, full or a labels file")
    parser.add_argument("--fontsource", default="arabic", metavar="SETS",
                        help="@fontsource sets of the corpus built without --db (build-db --fontsource), "
                             "e.g. arabic,default for the bigger Latin corpus")
    parser.add_argument("--eval-limit", type=int, metavar="N",
                        help="score a fixed sample of N held-out glyphs (evaluate --limit; short runs only)")
    args, extra = parser.parse_known_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()}", flush=True)
    db = args.db
    if db is None:
        db = args.out / "glyphs.db"
        build_corpus(db, args.fontsource)
    held, keys = split_fonts(db)
    print(f"{sum(f is None for f in held.values())} training fonts, {sum(f is not None for f in held.values())} "
          f"held-out fonts of {len(HELD_OUT)} families", flush=True)
    results = []
    for name in args.sets.split(","):
        if name == "full":
            labels = full_labels(db, held, keys)
        elif name in LABEL_FILES or Path(name).is_file():  # a set's labels file, or one of one's own
            labels = list(parse_label_list(str(LABEL_FILES.get(name, name))))
            name = name if name in LABEL_FILES else Path(name).stem
        else:
            sys.exit(f"bench_unseen: --sets {name}: not {', '.join([*LABEL_FILES, 'full'])} nor a labels file")
        results.append(run_set(name, labels, db, args.out, held, [*RECIPE, *extra], args.eval_limit))
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    report = "\n\n".join(table(r) for r in results)
    (args.out / "results.md").write_text(report + "\n")
    print(f"\nload average {os.getloadavg()}\n\n{report}")


if __name__ == "__main__":
    main()
