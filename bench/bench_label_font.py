"""How well `glyph-train label-font` recovers a font's characters, and how well the repaired font shapes.

For each font (use families the export never trained on): the truth is what the original font says, its cmap
(`{cp}_isol`) and the glyphs HarfBuzz shapes each joining letter to alone and in init/medi/fina contexts
(inference.sources.known_labels), among the glyphs that draw something. The font is then stripped of cmap and GSUB
and every glyph renamed glyphNNNNN (tests/fontfactory.strip_font), and labelled from outlines alone. Reported,
Latin (letters and digits), Arabic and the digits' figure variants (numerators ...) separately, over glyphs whose
true label the model knows:
- accuracy of the independent argmax and of the joint assignment (min confidence 0), and the joint one with
  top1_equiv's rule (`joint_equiv_accuracy`): a label also counts when the original font draws it with this
  glyph's very outline (Bangers' lowercase a is its A), which no labeller reading outlines can tell apart;
- at each --min-confidence: coverage (share labelled), precision (share right among labelled) and accuracy
  (share right: what label-font's CSV gets right at that setting, unknown counting as wrong), and the least of
  them whose precision reaches --precision (`min_confidence_for_precision`: how label-font's default is chosen);
- at label-font's default --min-confidence, the glyphs left unknown although their argmax was right, and why:
  another glyph took that label (the assignment favours one glyph per label), or its probability is below it;
- for the repaired font written at --repair-confidence (label-font --write-font's: 0, every assigned label): the
  share of seeded pseudo-words (Arabic and Latin) whose shaped glyph outline sequence equals the original font's,
  among the words whose every letter the font maps; and its ceiling, the share the original itself shapes
  identically with its ligatures and contextual features off (what a cmap + positional-forms repair can reach
  at best: Reem Kufi, Aref Ruqaa and Noto Nastaliq shape nearly every word contextually);
- the repaired font's cmap (`repaired_cmap`), every character and not only the words' letters: of the code
  points the original maps to a drawn glyph whose label the export knows, how many the repaired font maps, and
  to a glyph of the very same outline and advance (precision: of those it maps; recall: of all);
- by font (`by_font`): each font's joint accuracy per group, its errors (`TRUE->ASSIGNED` labels), its share
  of words shaped identically and of its repaired cmap's code points mapped to the same outline, so that where
  the errors are is measured, not guessed.
All of it from the same predictions, side by side: `all_priors` (label-font's default: probabilities
reweighted by the scripts the font draws, inference/font_prior.py, the Arabic positional forms by how the
glyphs join, inference/join_prior.py, and look-alikes such as O and 0 by how their glyphs compare in size,
inference/look_alike_prior.py), `script_and_join_prior` (--no-look-alike-prior), `script_prior` (and
--no-join-prior) and `model_only` (none), each
at every --duplicate-costs value (label-font's DUPLICATE_COST unmarked; `inf`: one glyph per label) and every
--extra-copies value (label-font's EXTRA_COPIES unmarked: how many more glyphs than one a label may have), every
--drawn-bonuses value (label-font's DRAWN_BONUS unmarked: what the first glyph of a letter or digit every font of
its script draws earns), every
--tta-views value (label-font's default unmarked; 0: the image alone) and every --adapt-steps value (label-font's
default unmarked; 0: the export's model as it is). Several --checkpoint exports are scored as label-font's
ensemble of them; with --each, each export alone too (`export K`), from the same forward passes.

    python bench/bench_label_font.py --checkpoint RUN/best [RUN2/best ... [--each]] FONT [FONT ...]
        [--fontsource SETS [--every N] [--subset latin]]
        [--thresholds 0.3,0.5,0.7,0.9] [--precision 0.99] [--repair-confidence 0] [--words 300]
        [--score-labels launch/label_font_labels.txt] [--duplicate-costs 2,inf] [--extra-copies 3,7]
        [--drawn-bonuses 0,1] [--tta-views 0,8]
        [--adapt-steps 0,20]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import tempfile
import time
import unicodedata
from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import uharfbuzz as hb

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fontfactory import strip_font  # noqa: E402

from glyph_train.corpus.db import parse_label_list  # noqa: E402
from glyph_train.corpus.fonts import sfnt_data  # noqa: E402
from glyph_train.corpus.fontsource import default_cache_dir, fetch_packages, resolve_names  # noqa: E402
from glyph_train.corpus.shaping import Shaper  # noqa: E402
from glyph_train.corpus.unicode_data import FIGURE_FEATURES, char_class, label as make_label  # noqa: E402
from glyph_train.inference.font_adaptation import ADAPT_STEPS_FLAG  # noqa: E402
from glyph_train.inference.label_font import (DEFAULT_MIN_CONFIDENCE, DRAWN_BONUS, DUPLICATE_COST,  # noqa: E402
                                              EXTRA_COPIES, TTA_VIEWS_FLAG, UNKNOWN, assign_font, predict_font)
from glyph_train.inference.predictor import BF16_FLAG, Ensemble, load_predictor  # noqa: E402
from glyph_train.inference.repair import write_repaired_font  # noqa: E402
from glyph_train.inference.sources import known_labels  # noqa: E402

ARABIC_LETTERS = [chr(c) for c in range(0x0627, 0x064B) if unicodedata.category(chr(c)) == "Lo" and c != 0x0640]
LATIN_LETTERS = [chr(c) for c in range(0x41, 0x5B)] + [chr(c) for c in range(0x61, 0x7B)] + list("0123456789")


def group(label: str) -> str | None:
    """Where a true label is scored: latin (ASCII letters and digits), arabic, figures (the digits' figure
    variants, scored apart: exports trained before them have no class for them), or not at all."""
    head, form = label.split("_", 1)
    if form in FIGURE_FEATURES:
        return "figures"
    cp = int(head)
    cls = char_class(cp)
    if cls == "arabic":
        return "arabic"
    if (cls == "latin" and chr(cp).isalpha()) or (cls == "digit" and cp < 0x80):
        return "latin"
    return None


def words(letters: list[str], count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(letters, size=rng.integers(3, 7))) for _ in range(count)]


def original_words(shaper: Shaper, letters: list[str], count: int, seed: int) -> list[tuple[str, list[str]]]:
    """(word, outline sequence) as the original font shapes it, for the words whose every letter the font maps
    and draws. A letter it lacks shapes as .notdef, and a Latin font's boxes for an Arabic word are identical in
    any repair: counted, they once inflated "words shaped identically" with scripts the font does not have."""
    cmap = shaper.cmap()
    return [(word, seq) for word in words(letters, count, seed)
            if all(ord(ch) in cmap for ch in word) and all(seq := outline_sequence(shaper, word))]


# What a repair from labels cannot rebuild: the repaired font has a cmap and isol/init/medi/fina (and figure)
# substitutions only, so the original's ligatures, contextual alternates and local forms are out of its reach.
NOT_REPAIRED = {f: False for f in ("ccmp", "locl", "rlig", "rclt", "calt", "liga", "clig", "mset", "fin2", "fin3",
                                   "med2")}


def outline_sequence(shaper: Shaper, text: str, features: dict | None = None) -> list[str]:
    buf = hb.Buffer()
    buf.add_str(text)
    buf.guess_segment_properties()
    hb.shape(shaper.font, buf, features or {})
    return [shaper.glyph_outline(info.codepoint) for info in buf.glyph_infos]


def cmap_agreement(before: Shaper, after: Shaper, known: set[str]) -> tuple[int, int, int]:
    """(code points the original maps to a drawn glyph with a label the export knows, those the repaired font
    maps, those it maps to a glyph of the very same outline and advance): how far its cmap can be trusted, every
    character (punctuation and accents too, which the words never use)."""
    def drawn(shaper: Shaper, gid: int) -> tuple[str, int]:
        return shaper.glyph_outline(gid), shaper.font.get_glyph_h_advance(gid)

    original = {cp: gid for cp, gid in before.cmap().items()
                if make_label(cp, "isol") in known and before.glyph_outline(gid)}
    repaired = after.cmap()
    mapped = [cp for cp in original if cp in repaired]
    same = sum(drawn(after, repaired[cp]) == drawn(before, original[cp]) for cp in mapped)
    return len(original), len(mapped), same


def drawn_alike(shaper: Shaper, truth_by_gid: dict[int, str]) -> Callable[[int, str], bool]:
    """(glyph id, label) -> whether the font draws that label with this glyph's very outline: top1_equiv's
    rule (evaluation.metrics.equivalent_top1) for one font's labelled glyphs."""
    outline = {gid: shaper.glyph_outline(gid) for gid in truth_by_gid}
    drawn = defaultdict(set)
    for gid, label in truth_by_gid.items():
        drawn[label].add(outline[gid])
    return lambda gid, label: outline.get(gid) in drawn.get(label, ())


def score_font(predicted, truth_by_gid: dict, known: set, thresholds: list[float], repair_confidence: float,
               duplicate_cost: float, repaired: Path, alike: Callable[[int, str], bool] = lambda gid, label: False,
               extra_copies: int = EXTRA_COPIES, bonus: float = DRAWN_BONUS) -> tuple[dict, dict[str, list[str]]]:
    """One font's right and wrong labels, group -> counter, and the joint assignment's errors, group ->
    ['TRUE->ASSIGNED', ...] (marked ' =' where `alike` (drawn_alike) forgives it); its repaired copy is written
    to `repaired`."""
    runs = {t: assign_font(predicted, t, duplicate_cost, extra_copies, bonus)
            for t in [0.0, *thresholds, repair_confidence, DEFAULT_MIN_CONFIDENCE]}
    tally, errors = defaultdict(lambda: defaultdict(int)), defaultdict(list)
    for t, result in runs.items():
        taken = {g.label for g in result.glyphs}
        for g in result.glyphs:
            truth = truth_by_gid.get(g.glyph_id)
            if truth is None or truth not in known or group(truth) is None:
                continue
            c = tally[group(truth)]
            if t == 0.0:
                c["glyphs"] += 1
                c["argmax_right"] += g.argmax == truth
                c["joint_right"] += g.label == truth
                forgiven = g.label != truth and alike(g.glyph_id, g.label)
                c["joint_equiv_right"] += g.label == truth or forgiven
                if g.label != truth:
                    errors[group(truth)].append(f"{truth}->{g.label}" + " =" * forgiven)
            if t in thresholds:
                c[f"labelled@{t}"] += g.label != UNKNOWN
                c[f"right@{t}"] += g.label == truth
            if t == DEFAULT_MIN_CONFIDENCE and g.label == UNKNOWN and g.argmax == truth:
                # what the CSV leaves unknown although the argmax was right: why
                c["lost_to_another_glyph" if truth in taken else "lost_below_confidence"] += 1
    write_repaired_font(predicted.font, repaired, runs[repair_confidence].assignment())
    return tally, errors


def least_threshold(counts: dict, thresholds: list[float], precision: float) -> float | None:
    """The least threshold at which the labelled glyphs are at least `precision` right (None: none is)."""
    return min((t for t in thresholds
                if counts[f"labelled@{t}"] and counts[f"right@{t}"] >= precision * counts[f"labelled@{t}"]),
               default=None)


def add_font(font_tally: dict, tally: dict, errors: dict[str, list[str]]) -> dict:
    """Add one font's counts to the variant's tally; return its by_font entry: group -> glyphs, joint accuracy
    and the joint assignment's errors (true label -> assigned)."""
    for key, c in font_tally.items():
        for name, count in c.items():
            tally[key][name] += count
    return {key: {"glyphs": c["glyphs"], "joint_accuracy": round(c["joint_right"] / c["glyphs"], 4),
                  "joint_equiv_accuracy": round(c["joint_equiv_right"] / c["glyphs"], 4), "errors": errors[key]}
            for key, c in font_tally.items() if c["glyphs"]}


# name -> (script prior, join prior, look-alike prior): label-font's switches
PRIORS = {"all_priors": (True, True, True), "script_and_join_prior": (True, True, False),
          "script_prior": (True, False, False), "model_only": (False, False, False)}


def predictions(stripped: Path, predictor, members: list, views: int, steps: int, each: bool) -> dict:
    """source ('' for the export or ensemble, `export K` for a member alone with --each) -> PRIORS name ->
    predictions: predicted once per setting (the rest is assignment) and adapted on its own labels, as label-font
    does. Unadapted, the ensemble's probabilities are its members' mean, so --each costs nothing."""
    each = each and len(members) > 1
    if steps:  # each adapted on its own labels: no predictions to share
        scored = [("", predictor)] + ([(f"export {k}", m) for k, m in enumerate(members, 1)] if each else [])
        return {name: {prior: predict_font(stripped, p, script, views, steps, join, look_alike)
                       for prior, (script, join, look_alike) in PRIORS.items()} for name, p in scored}
    alone = [predict_font(stripped, m, False, views, join_prior=False, look_alike_prior=False) for m in members]
    model_only = {"": dataclasses.replace(alone[0], probs=sum(a.probs for a in alone) / len(alone))}
    if each:
        model_only |= {f"export {k}": a for k, a in enumerate(alone, 1)}
    out = {}
    for name, pred in model_only.items():
        script = pred.with_script_prior()
        joined = script.with_join_prior()
        made = {(True, True, True): joined.with_look_alike_prior(), (True, True, False): joined,
                (True, False, False): script, (False, False, False): pred}
        out[name] = {prior: made[switches] for prior, switches in PRIORS.items()}
    return out


def fontsource_fonts(spec: str, every: int, subset: str, cache: Path | None = None) -> list[Path]:
    """Every `every`-th package of build-db's --fontsource SPEC (sets or names), as its `subset` subset's
    regular (400 normal) file, downloading the packages the cache lacks: families the README's exports never
    trained on beyond bench_unseen's held-out ones (the `more` and `script` sets, BENCHMARKS.md §14ac)."""
    def warn(message: str) -> None:
        print(f"bench_label_font: {message}", file=sys.stderr)

    names, _ = resolve_names(spec)
    packages = fetch_packages(names[::every], cache or default_cache_dir(), warn)
    fonts = [pkg / "files" / f"{pkg.name}-{subset}-400-normal.woff2" for pkg in packages]
    for font in fonts:
        if not font.is_file():
            warn(f"skipped {font.parent.parent.name}: it has no {subset} 400 normal file")
    return [font for font in fonts if font.is_file()]


def variant_name(source: str, prior: str, cost: float, views: int, steps: int, copies: int = EXTRA_COPIES,
                 bonus: float = DRAWN_BONUS) -> str:
    """The report's key: the source and prior, and each setting that is not label-font's default."""
    return ", ".join(([source] if source else []) + [prior]
                     + ([f"duplicate cost {cost:g}"] if cost != DUPLICATE_COST else [])
                     + ([f"extra copies {copies}"] if copies != EXTRA_COPIES else [])
                     + ([f"drawn bonus {bonus:g}"] if bonus != DRAWN_BONUS else [])
                     + ([f"tta views {views}"] if views != TTA_VIEWS_FLAG.default else [])
                     + ([f"adapt steps {steps}"] if steps != ADAPT_STEPS_FLAG.default else []))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fonts", nargs="*", type=Path)
    ap.add_argument("--fontsource", metavar="SETS", help="also score these @fontsource packages (build-db's "
                    "--fontsource: set or package names), their --subset files, downloaded when not cached")
    ap.add_argument("--every", type=int, default=1, metavar="N", help="of --fontsource, every N-th package")
    ap.add_argument("--subset", default="latin", help="the --fontsource packages' subset to score")
    ap.add_argument("--checkpoint", required=True, nargs="+", metavar="EXPORT",
                    help="an export, or several: label-font's ensemble of them")
    ap.add_argument("--each", action="store_true", help="with several exports: also score each alone (export K)")
    ap.add_argument("--thresholds", default="0.3,0.5,0.7,0.8,0.9,0.95")
    ap.add_argument("--precision", type=float, default=0.99,
                    help="report the least --thresholds value whose precision reaches this (the issue asks 0.99 of "
                         "label-font's default --min-confidence)")
    ap.add_argument("--repair-confidence", type=float, default=0.0,
                    help="the min confidence the repaired font is written at (label-font --write-font's: 0)")
    ap.add_argument("--words", type=int, default=300)
    ap.add_argument("--duplicate-costs", default=str(DUPLICATE_COST), metavar="C,C",
                    help="label-font's cost of a label's each further glyph, one report per value (inf: one glyph "
                         f"per label; 0: independent argmax); label-font's own is {DUPLICATE_COST}")
    ap.add_argument("--extra-copies", default=str(EXTRA_COPIES), metavar="N,N",
                    help="how many more glyphs than one a label may have, one report per value; label-font's own is "
                         f"{EXTRA_COPIES}")
    ap.add_argument("--drawn-bonuses", default=f"{DRAWN_BONUS:g}", metavar="B,B",
                    help="what the first glyph of a letter or digit every font of its script draws earns in "
                         f"log-probability, one report per value (0: nothing); label-font's own is {DRAWN_BONUS:g}")
    ap.add_argument("--tta-views", default=str(TTA_VIEWS_FLAG.default), metavar="N,N",
                    help="label-font --tta-views values, one report each; label-font's own is "
                         f"{TTA_VIEWS_FLAG.default}")
    ap.add_argument("--adapt-steps", default=str(ADAPT_STEPS_FLAG.default), metavar="N,N",
                    help="label-font --adapt-steps values, one report each; label-font's own is "
                         f"{ADAPT_STEPS_FLAG.default}")
    BF16_FLAG.add(ap)
    ap.add_argument("--score-labels", metavar="FILE|LIST",
                    help="score only glyphs whose true label is one of these (labels file or comma list), so that "
                         "exports with more classes are compared on the same glyphs; default: every label it knows")
    args = ap.parse_args()
    if args.every < 1:
        ap.error("--every takes a whole number of at least 1")
    if args.fontsource:
        args.fonts += fontsource_fonts(args.fontsource, args.every, args.subset)
    if not args.fonts:
        ap.error("give FONT files or --fontsource SETS")
    thresholds = [float(t) for t in args.thresholds.split(",")]
    duplicate_costs = [float(c) for c in args.duplicate_costs.split(",")]
    extra_copies = [int(c) for c in args.extra_copies.split(",")]
    bonuses = [float(b) for b in args.drawn_bonuses.split(",")]
    tta_views = [int(v) for v in args.tta_views.split(",")]
    adapt_steps = [int(v) for v in args.adapt_steps.split(",")]
    predictor = load_predictor(args.checkpoint, bf16=args.bf16)
    members = predictor.members if isinstance(predictor, Ensemble) else [predictor]
    known = set(predictor.label_names)
    if args.score_labels:
        known &= set(parse_label_list(args.score_labels))
    tally = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))  # variant -> group -> counter
    shaping = defaultdict(lambda: defaultdict(lambda: [0, 0]))  # variant -> script -> [identical, words]
    by_font = defaultdict(dict)  # variant -> font file name -> group -> glyphs, joint accuracy, errors, words
    ceiling = defaultdict(int)  # script -> words the original shapes identically without NOT_REPAIRED
    cmap = defaultdict(lambda: [0, 0, 0])  # variant -> cmap_agreement summed over the fonts
    t0 = time.perf_counter()
    print(f"load {os.getloadavg()[0]:.1f}; "
          + "; ".join(f"export {k} {m.export_dir} (T={m.temperature:.3f})" for k, m in enumerate(members, 1))
          + (", bf16" if args.bf16 else ""), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for font in args.fonts:
            # WOFF/WOFF2 decoded once per font (HarfBuzz reads sfnt only), not once per word
            before = Shaper(sfnt_data(font))
            truth_by_gid = known_labels(before)
            alike = drawn_alike(before, truth_by_gid)
            stripped = strip_font(font, Path(tmp) / f"stripped{font.suffix}")
            originals = {script: original_words(before, letters, args.words, seed=len(script))
                         for script, letters in (("arabic", ARABIC_LETTERS), ("latin", LATIN_LETTERS))}
            for script, shaped in originals.items():
                ceiling[script] += sum(outline_sequence(before, word, NOT_REPAIRED) == seq for word, seq in shaped)
            for views, steps in itertools.product(tta_views, adapt_steps):
                for source, priors in predictions(stripped, predictor, members, views, steps, args.each).items():
                    for prior, predicted in priors.items():
                        for cost, copies, bonus in itertools.product(duplicate_costs, extra_copies, bonuses):
                            variant = variant_name(source, prior, cost, views, steps, copies, bonus)
                            repaired = Path(tmp) / f"repaired{font.suffix}"
                            font_tally, errors = score_font(predicted, truth_by_gid, known, thresholds,
                                                            args.repair_confidence, cost, repaired, alike, copies,
                                                            bonus)
                            scores = by_font[variant][font.name] = add_font(font_tally, tally[variant], errors)
                            after = Shaper(sfnt_data(repaired))
                            counts = cmap_agreement(before, after, set(predictor.label_names))
                            cmap[variant] = [a + b for a, b in zip(cmap[variant], counts)]
                            scores["cmap_identical"] = round(counts[2] / max(counts[1], 1), 4)
                            for script, shaped in originals.items():
                                identical = sum(outline_sequence(after, word) == seq for word, seq in shaped)
                                shaping[variant][script][0] += identical
                                shaping[variant][script][1] += len(shaped)
                                if shaped:
                                    scores.setdefault(script, {})["words_shaped_identically"] = round(
                                        identical / len(shaped), 4)
            print(f"{font.name}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    if not any(tally.values()):  # e.g. fonts HarfBuzz could not read: never report an empty result as a measurement
        sys.exit("bench_label_font: no glyph of these fonts has a label the export knows; nothing to score")
    report = {}
    for variant, groups in tally.items():
        report[variant] = {}
        for key, c in groups.items():
            n = max(c["glyphs"], 1)
            report[variant][key] = {
                "glyphs": c["glyphs"], "argmax_accuracy": round(c["argmax_right"] / n, 4),
                "joint_accuracy": round(c["joint_right"] / n, 4),
                "joint_equiv_accuracy": round(c["joint_equiv_right"] / n, 4),
                "at_threshold": {str(t): {"coverage": round(c[f"labelled@{t}"] / n, 4),
                                          "precision": round(c[f"right@{t}"] / max(c[f"labelled@{t}"], 1), 4),
                                          "accuracy": round(c[f"right@{t}"] / n, 4)}
                                 for t in thresholds},
                "min_confidence_for_precision": least_threshold(c, thresholds, args.precision),
                f"argmax_right_but_unknown@{DEFAULT_MIN_CONFIDENCE}": {
                    "label_taken_by_another_glyph": c["lost_to_another_glyph"],
                    "below_confidence": c["lost_below_confidence"]}}
        report[variant]["words_shaped_identically"] = {
            s: {"share": round(a / max(b, 1), 4), "words": b, "ceiling": round(ceiling[s] / max(b, 1), 4)}
            for s, (a, b) in shaping[variant].items()}
        original, mapped, same = cmap[variant]
        report[variant]["repaired_cmap"] = {"code_points": original, "mapped": mapped, "identical": same,
                                            "precision": round(same / max(mapped, 1), 4),
                                            "recall": round(same / max(original, 1), 4)}
        report[variant]["by_font"] = by_font[variant]
    print(f"load after {os.getloadavg()[0]:.1f}")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
