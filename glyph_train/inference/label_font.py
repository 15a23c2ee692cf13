"""`glyph-train label-font FONT --checkpoint EXPORT [EXPORT ...] --out labels.csv [--write-font OUT.ttf]
[--min-confidence P]`

Which character (and Arabic positional form) each glyph of a font is, from its outline and the font's
vertical metrics only: glyph names, cmap and GSUB are what is broken or missing, so they are never read as
evidence. Per glyph the model gives calibrated probabilities (softmax(logits / T), T from the export), averaged
over the glyph's image and --tta-views augmented copies (predictor.py) and, given several exports, over them
(an ensemble: predictor.py's Ensemble), reweighted by the scripts the font
draws: each script's share of the font is estimated by EM over all its glyphs (inference/font_prior.py;
--no-script-prior keeps the model's own), and the Arabic positional forms by how each glyph joins: whether its
ink reaches x = 0 and its advance, the forms' shares in each such class estimated by EM (inference/join_prior.py;
--no-join-prior leaves them), and look-alikes (O 0 o, I l 1 |, a capital and its lowercase drawn as a smaller one)
by how their glyphs' ink boxes compare, as they do in the training fonts: O wider than 0, l taller than I
(inference/look_alike_prior.py; --no-look-alike-prior leaves them). With --adapt-steps N (off by default), a
copy of the model is fine-tuned for N steps on the glyphs it is sure of, with their labels, and its
probabilities are averaged with the model's (font_adaptation.py): the font's own style, learnt from its easy
glyphs, helps read the hard ones.
Then the labels are chosen jointly for the whole font, since a font seldom draws one character twice: an optimal
assignment (scipy's sparse LAPJVsp over each glyph's top labels) maximising the summed log-probability, where
the k-th glyph given a label pays (k - 1) * DUPLICATE_COST more and the first glyph of a letter or digit of a
script the font draws earns DRAWN_BONUS: a font draws all of them, so a digit drawn small, a shade likelier its
numerator, stays the digit when no other glyph is likelier it.
So a glyph takes a label another glyph has only when it is far likelier than any label of its own: a tabular
or old-style figure, a Turkish i, a letter of another language drawn like one of ours, where a hard
one-glyph-per-label rule handed the label to whichever copy scored higher and left the glyph the font really
maps without it. Display fonts draw their lowercase as capitals (Bangers) or small
capitals (Cinzel), which the model, seeing one glyph at a time, calls capitals: a lowercase letter is taken
to be at least LOWERCASE_AS_CAPITAL times as likely as its capital (case_pairs), so a font's second drawing
of a capital, with no glyph likelier its lowercase, becomes the lowercase (the one whose ink is lower, then
the later one in glyph order, as fonts list capitals first). A glyph likelier the export's other class
(trained with --others-per-label: glyphs that are none of its labels) than any label stays `unknown`, and so
does one whose assigned label is less likely than --min-confidence (0.98 by default, where the CSV's labels are
at least 99 % right on the held-out fonts; top5 still gives every glyph's likeliest). The repaired font
(--write-font) maps one glyph per label (FontLabels.assignment), by default every label of the assignment
(--font-min-confidence 0): a letter it leaves out shapes as .notdef, while a label below 0.5 is still right more
often than not.

CSV (in glyph id order; glyphs that draw nothing are `unknown` with an empty top5):
    glyph,label,confidence,top5        top5 = label:prob;label:prob;...  (the glyph's own top 5)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import io
import math
import os
import sys
import tempfile
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glyph_train.cache.pipeline import FORWARD_BATCH_FLAG
from glyph_train.corpus.db import OTHER_LABEL, other_class
from glyph_train.errors import GlyphTrainError
from glyph_train.flags import Flag, non_negative_int
from glyph_train.inference.font_adaptation import ADAPT_STEPS_FLAG, MIN_PSEUDO_LABELS, PSEUDO_LABEL_CONFIDENCE
from glyph_train.inference.predictor import BF16_FLAG
from glyph_train.model.export import CHECKPOINT_FLAG

UNKNOWN = "unknown"
# The CSV's labels are to be trusted (#8: a default for >= 99 % precision): the least of bench_label_font's
# thresholds at which the README's pair of exports labels at least 99 % of the held-out fonts' Latin and Arabic
# glyphs right (min_confidence_for_precision; 0.95 leaves Arabic at 98.8 %). At 0.98 they label 69 % and 57 %
# of those glyphs, 99.3 % right; --min-confidence 0.5 labels 96 % and 90 %, 97.6 % and 96 % right (§14aa).
DEFAULT_MIN_CONFIDENCE = 0.98
CANDIDATES_PER_GLYPH = 10  # labels outside a glyph's top 10 cannot be assigned to it (keeps the matrix small)
# A label's second glyph costs this much log-probability, its third twice as much...: e^-2 ~ 1:7 odds against
# a font drawing a character twice. bench_label_font --duplicate-costs measures it: on the held-out fonts joint
# accuracy is flat from 1 to 4 and every value in that range beats both 0 (independent argmax) and inf (one
# glyph per label) (BENCHMARKS.md §14j).
DUPLICATE_COST = 2.0
# At most 1 + 7 glyphs per label, the 8th paying 14 in log-probability: figures come proportional, tabular,
# lining and old-style, and a font with Greek and Cyrillic draws O as Ο and О too, which the export (no classes
# for them) also reads as O. With 1 + 3, Roboto's O, Cyrillic О and Greek Ο were left unknown while four
# alternates kept the label; 10 full fonts had 27 of their Latin letters and digits wrong, 12 with 1 + 7 (the
# held-out subsets do not move; BENCHMARKS.md §14ab).
EXTRA_COPIES = 7
# Glyphs sharing a label whose probabilities are within 10 % are a tie for the repaired font's one glyph:
# measured on the held-out fonts, 3-10 % map 2-3 points more Arabic words than glyph order alone and 8 more
# Latin ones than the likeliest alone (tabular figures are often a shade likelier; BENCHMARKS.md §14j).
TIE = 0.1
# How likely a glyph drawn like a capital is its lowercase, in any font: above e^-DUPLICATE_COST (0.14), so a
# font's second drawing of a capital becomes the lowercase when no glyph is likelier it. On the held-out fonts
# 0.14-0.5 are alike, Latin joint +2.2 points, and little else moves (BENCHMARKS.md §14k).
LOWERCASE_AS_CAPITAL = 0.25
# A font draws every letter and digit of a script it draws (always_drawn): the first glyph given one of those
# labels earns this much log-probability, so a glyph leaves such a label for another label, a later copy of
# one or unknown only where that is e times likelier. Dekko's 0 and 5, a shade likelier their numerators, stay
# the digits, and so do Modak's 2 and 3, whose numerators ² and ³ draw; Gochi Hand's E is no longer €. Borel's
# digits, far likelier their numerators, stay numerators. On the held-out fonts 1 is best (Latin 49 -> 45
# wrong, Arabic 110 -> 108); on 68 more unseen families, on which no setting was chosen, 327 -> 298, and fewer
# up to 3-4 (270), which costs the held-out fonts chains among O 0 o (BENCHMARKS.md §14ac).
DRAWN_BONUS = 1.0
DRAWN_SCRIPT_SHARE = 0.05  # a script is drawn when the script prior puts at least this share of the glyphs in it


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability in [0, 1], got {text!r}")
    return value


MIN_CONFIDENCE_FLAG = Flag("--min-confidence", "glyphs whose label is less likely than P are `unknown`",
                           DEFAULT_MIN_CONFIDENCE, type=_probability, metavar="P")
FONT_MIN_CONFIDENCE_FLAG = Flag(
    "--font-min-confidence", "with --write-font: the repaired font maps labels at least P likely; below "
    "--min-confidence they are unknown in the CSV and listed (0: every assigned label, as a letter left out shapes "
    "as .notdef)", 0.0, type=_probability, metavar="P")
TTA_VIEWS_FLAG = Flag("--tta-views", "average each glyph's probabilities over its image and N augmented copies "
                      "(test-time augmentation: N + 1 forward passes; 0: the image alone)", 8, type=non_negative_int,
                      metavar="N")
# Several exports (trained with other seeds, say) label as one: their probabilities are averaged (predictor.py's
# Ensemble). Two seeds of the recipe: +0.7 points of Latin and +0.7 to +1.9 of Arabic joint accuracy over either
# alone, 1.7 times the time; at --tta-views 4, the time of one export at 8 and still ahead (BENCHMARKS.md §14r).
ENSEMBLE_CHECKPOINT_FLAG = CHECKPOINT_FLAG.variant(
    help="an export directory (run_dir/export or run_dir/best); several, trained on one label set: each glyph's "
         "probabilities are their mean (an ensemble: each export's forward passes, on the same copies)")
SCRIPT_PRIOR_FLAG = Flag("--script-prior", "reweight the model's probabilities by each script's share of the font's "
                         "glyphs, estimated by EM over the whole font (inference/font_prior.py)", True)
# Arabic joint accuracy 88.9 % -> 90.9 % on the held-out fonts (two exports), Latin unchanged (BENCHMARKS.md §14v)
JOIN_PRIOR_FLAG = Flag("--join-prior", "reweight Arabic positional forms by how the font's glyphs join: whether a "
                       "glyph's ink reaches x = 0 and its advance, each form's share of such glyphs estimated by EM "
                       "(inference/join_prior.py)", True)
# Latin joint accuracy 96.3 % -> 96.7 % on the held-out fonts (two exports), Latin words 82 % -> 85 % (§14w)
LOOK_ALIKE_PRIOR_FLAG = Flag("--look-alike-prior", "reweight look-alikes (O 0 o, I l 1 |, C c, S s ...) by how their "
                             "glyphs' ink boxes compare within the font, as the training fonts' do "
                             "(inference/look_alike_prior.py)", True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("font", type=Path, metavar="FONT", help="font file to label (read only, never modified)")
    ENSEMBLE_CHECKPOINT_FLAG.add(parser, required=True, nargs="+")
    parser.add_argument("--out", required=True, type=Path, help="CSV to write: glyph,label,confidence,top5")
    parser.add_argument("--write-font", type=Path, metavar="OUT.ttf",
                        help="also write a repaired copy of the font: cmap + Arabic init/medi/fina GSUB from the "
                             "labels (--font-min-confidence)")
    MIN_CONFIDENCE_FLAG.add(parser)
    FONT_MIN_CONFIDENCE_FLAG.add(parser, unset=True)
    SCRIPT_PRIOR_FLAG.add(parser)
    JOIN_PRIOR_FLAG.add(parser)
    LOOK_ALIKE_PRIOR_FLAG.add(parser)
    TTA_VIEWS_FLAG.add(parser)
    ADAPT_STEPS_FLAG.add(parser)
    BF16_FLAG.add(parser)
    FORWARD_BATCH_FLAG.add(parser)


@dataclass
class GlyphLabel:
    glyph: str
    glyph_id: int
    label: str  # joint assignment, or UNKNOWN
    confidence: float  # calibrated probability of `label` (of the best label when unknown)
    argmax: str  # independent best label ('' when the glyph draws nothing)
    top5: list[tuple[str, float]] = field(default_factory=list)
    spacing: bool = True  # it has an advance (a combining mark's is zero)


@dataclass
class FontLabels:
    font: Path
    family: str
    style: str
    glyphs: list[GlyphLabel]
    unrenderable: list[str]  # glyph names the renderer refused
    script_shares: dict[str, float] = field(default_factory=dict)  # see FontPredictions

    def assignment(self) -> dict[str, str]:
        """glyph name -> label for the repaired font, which maps one glyph per label: the likeliest of the
        glyphs that have it, near-ties (within TIE of its probability) going to the first in glyph order, as
        fonts usually list a default glyph before its variants (`three` before `three.tf`), while a ligature
        drawn like an m, sharing m's label at lower probability, does not take the m's place."""
        holders: dict[str, list[GlyphLabel]] = {}
        for g in self.glyphs:  # in glyph id order
            if g.label != UNKNOWN:
                holders.setdefault(g.label, []).append(g)
        out: dict[str, str] = {}
        for label, gs in holders.items():
            # a spacing character's glyph has an advance, a combining mark's has none: Gelasio's zero-width
            # uni0308, likelier ¨ than its dieresis, must not be what the repaired font types for ¨
            gs = [g for g in gs if g.spacing != _is_mark(label)] or gs
            tie = max(g.confidence for g in gs) * (1 - TIE)
            out[next(g for g in gs if g.confidence >= tie).glyph] = label
        return out


def run(args: argparse.Namespace) -> int:
    font = args.font
    if not font.is_file():
        raise GlyphTrainError(f"{font}: no such font file")
    for flag, path in (("--out", args.out), ("--write-font", args.write_font)):
        if path is not None and _same_file(path, font):
            raise GlyphTrainError(f"{flag} {path} is the input font; the input is never overwritten, choose another path")
    if args.write_font is not None and _same_file(args.write_font, args.out):
        raise GlyphTrainError("--out and --write-font name the same file")
    if args.font_min_confidence is not None and args.write_font is None:
        raise GlyphTrainError("--font-min-confidence sets what the repaired font maps: give --write-font OUT.ttf too")
    from glyph_train.inference.predictor import load_predictor

    predictor = load_predictor(args.checkpoint, batch_size=args.batch_size, bf16=args.bf16)
    predicted = predict_font(font, predictor, args.script_prior, args.tta_views, args.adapt_steps, args.join_prior,
                             args.look_alike_prior)
    result = assign_font(predicted, args.min_confidence)
    write_csv(args.out, result.glyphs)
    labelled = sum(g.label != UNKNOWN for g in result.glyphs)
    others = sum(g.argmax == OTHER_LABEL for g in result.glyphs)
    print(f"label-font: {font}: {len(result.glyphs)} glyphs, {labelled} labelled, {len(result.glyphs) - labelled} "
          f"unknown (min confidence {args.min_confidence}"
          + (f"; {others} likeliest none of the model's labels" if predictor.other is not None else "")
          + f"); wrote {args.out}")
    if result.script_shares:
        shares = sorted(result.script_shares.items(), key=lambda kv: -kv[1])
        print("label-font: scripts " + ", ".join(f"{name} {share:.2f}" for name, share in shares if share >= 0.01))
    if result.unrenderable:
        print(f"label-font: {len(result.unrenderable)} glyphs could not be rendered: {', '.join(result.unrenderable[:5])}",
              file=sys.stderr)
    if args.write_font is not None:
        from glyph_train.inference.repair import write_repaired_font

        # by default every label: on the held-out fonts the repaired fonts then shape 57 % of the Arabic words and
        # 79 % of the Latin ones identically, against 49 % and 69 % at 0.5 (BENCHMARKS.md §14l)
        floor = FONT_MIN_CONFIDENCE_FLAG.default if args.font_min_confidence is None else args.font_min_confidence
        mapped = assign_font(predicted, floor).assignment()
        report = write_repaired_font(font, args.write_font, mapped)
        print(f"label-font: wrote {args.write_font}: {report.summary()}")
        below = sorted(set(mapped.values()) - set(result.assignment().values()))
        if below:
            more = " ..." if len(below) > 10 else ""
            print(f"label-font: mapped {len(below)} labels below --min-confidence {args.min_confidence} "
                  f"(unknown in the CSV): {', '.join(below[:10])}{more}", file=sys.stderr)
        for line in report.stand_ins:
            print(f"label-font: stand-in: {line}", file=sys.stderr)
        for line in report.unmapped:
            print(f"label-font: not mapped: {line}", file=sys.stderr)
    return 0


def _is_mark(label: str) -> bool:
    """Whether a label's character is a combining mark (Unicode category M*)."""
    from glyph_train.inference.font_prior import code_point

    cp = code_point(label)
    return cp is not None and unicodedata.category(chr(cp)).startswith("M")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


@dataclass
class FontPredictions:
    """A font's glyphs and the model's calibrated probabilities for those it could render: what the labels
    are chosen from, at any --min-confidence."""

    font: Path
    family: str
    style: str
    records: list  # inference.sources glyph records, in glyph id order
    rows: list[int]  # records[rows[i]] is probs[i]
    probs: np.ndarray  # (len(rows), labels)
    blank: list[tuple[int, str]]  # (glyph id, name) of glyphs that draw nothing
    label_names: list[str]
    join_classes: np.ndarray  # per row: how its glyph joins (join_prior.join_classes)
    advances: np.ndarray  # per row: its glyph's advance (font units)
    tops: np.ndarray  # per row: the top of its glyph's ink (em): which of two drawings is the lowercase
    script_shares: dict[str, float] = field(default_factory=dict)  # each script's estimated share of the font,
    # once with_script_prior has reweighted probs by them (empty: probs are the model's own)

    @functools.cached_property
    def top5(self) -> list[list[tuple[str, float]]]:
        return top_labels(self.label_names, self.probs)

    @property
    def unrenderable(self) -> list[str]:
        rendered = set(self.rows)
        return [r.glyph for k, r in enumerate(self.records) if k not in rendered]

    def with_script_prior(self) -> FontPredictions:
        """These predictions reweighted by the scripts the font draws (font_prior.py)."""
        from glyph_train.inference.font_prior import adapt_to_font, label_scripts

        groups, names = label_scripts(self.label_names, other_class(self.label_names))
        probs, shares = adapt_to_font(self.probs, groups)
        return dataclasses.replace(self, probs=probs, script_shares=dict(zip(names, shares.tolist())))

    def with_join_prior(self) -> FontPredictions:
        """These predictions with the Arabic positional forms reweighted by how the glyphs join (join_prior.py)."""
        from glyph_train.inference.join_prior import adapt_to_joins, label_forms

        return dataclasses.replace(self, probs=adapt_to_joins(self.probs, label_forms(self.label_names),
                                                              self.join_classes))

    def with_look_alike_prior(self) -> FontPredictions:
        """These predictions with look-alikes reweighted by how their glyphs compare in size (look_alike_prior.py)."""
        from glyph_train.inference.look_alike_prior import adapt_to_look_alikes, comparison_table, ink_box

        def box(row: int) -> np.ndarray:
            record = self.records[self.rows[row]]
            return ink_box(record.contours, record.em.upem)

        return dataclasses.replace(self, probs=adapt_to_look_alikes(self.probs, self.label_names, box,
                                                                    comparison_table()))


def top_labels(label_names: list[str], probs: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
    """Each row's k likeliest labels with their probabilities, best first."""
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(label_names[j], float(p[j])) for j in row] for p, row in zip(probs, order)]


def predict_font(font: Path, predictor, script_prior: bool = True, views: int = TTA_VIEWS_FLAG.default,
                 adapt_steps: int = ADAPT_STEPS_FLAG.default, join_prior: bool = True,
                 look_alike_prior: bool = True) -> FontPredictions:
    """Render and predict every glyph of the font's default face (reweighted by its scripts: --script-prior,
    its Arabic forms by how its glyphs join: --join-prior, and its look-alikes by how they compare:
    --look-alike-prior;
    averaged over `views` augmented copies of each glyph: --tta-views); with `adapt_steps`, averaged with the
    probabilities of a copy of the model fine-tuned on the font's confident glyphs (--adapt-steps,
    font_adaptation.py)."""
    from glyph_train.inference.join_prior import join_classes
    from glyph_train.inference.sources import default_face, face_glyphs, face_shaper, glyph_names

    face = default_face(font)
    try:
        records, empty = face_glyphs(face, with_labels=False)  # names, cmap and GSUB are not evidence
    except Exception as err:  # HarfBuzz/fontTools on a damaged font
        raise GlyphTrainError(f"{font}: cannot draw its glyphs ({type(err).__name__}: {err})") from None
    rendered = predictor.render((k, r.contours, r.em) for k, r in enumerate(records))
    gid_of = {name: gid for gid, name in enumerate(glyph_names(face))}
    shaper, glyph_ids = face_shaper(face), [records[k].glyph_id for k in rendered.keys]
    joins = join_classes(shaper, glyph_ids)
    advances = np.array([shaper.font.get_glyph_h_advance(g) for g in glyph_ids], dtype=np.int64)
    tops = np.array([e.y_bearing if (e := shaper.font.get_glyph_extents(g)) else 0 for g in glyph_ids],
                    dtype=np.float64) / max(shaper.font.face.upem, 1)

    def predicted(probs: np.ndarray) -> FontPredictions:
        pred = FontPredictions(font, face.family_name, face.style_name, records, list(rendered.keys), probs,
                               [(gid_of[n], n) for n in empty], list(predictor.label_names), joins, advances,
                               tops)
        pred = pred.with_script_prior() if script_prior else pred
        pred = pred.with_join_prior() if join_prior else pred
        return pred.with_look_alike_prior() if look_alike_prior else pred

    if not rendered.keys:
        return predicted(np.zeros((0, len(predictor.label_names))))
    probs = predictor.predict(rendered.images, views).probs
    pred = predicted(probs)
    rows, columns = confident_labels(pred) if adapt_steps else ([], [])
    if len(rows) >= MIN_PSEUDO_LABELS:
        # the two models' mean: the adapted one alone, trained on the font's own glyphs, is overconfident
        # (precision of Arabic labels at 0.9: 98.1 % -> 96.2 %, with the mean 97.7 %; BENCHMARKS.md §14p)
        adapted = predictor.adapted(rendered.images[rows], columns, adapt_steps)
        pred = predicted((probs + adapted.predict(rendered.images, views).probs) / 2)
    return pred


def confident_labels(pred: FontPredictions) -> tuple[np.ndarray, np.ndarray]:
    """(rows, label columns) of the glyphs --adapt-steps trains on: those whose jointly assigned label is at
    least PSEUDO_LABEL_CONFIDENCE likely and their own likeliest. A label the assignment gave for another
    reason (a capital's second drawing taken as its lowercase: Bangers' copies) would teach one image two labels;
    trained on, it cost Bangers 15 of its letters (BENCHMARKS.md §14p)."""
    names = pred.label_names
    assigned, _ = assign_labels(pred.probs, PSEUDO_LABEL_CONFIDENCE, other_class(names), DUPLICATE_COST,
                                case_pairs(names), pred.tops, bonus=drawn_bonus(pred))
    sure = (assigned >= 0) & (assigned == pred.probs.argmax(axis=1))
    return np.flatnonzero(sure), assigned[sure]


def assign_font(pred: FontPredictions, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
                duplicate_cost: float = DUPLICATE_COST, extra_copies: int = EXTRA_COPIES,
                bonus: float = DRAWN_BONUS) -> FontLabels:
    """Labels chosen jointly for the font (see assign_labels; `bonus`: drawn_bonus's)."""
    names, probs = pred.label_names, pred.probs
    assigned, confidence = assign_labels(probs, min_confidence, other_class(names), duplicate_cost, case_pairs(names),
                                         pred.tops, extra_copies, drawn_bonus(pred, bonus))
    out: dict[int, GlyphLabel] = {}
    for row, k in enumerate(pred.rows):
        r = pred.records[k]
        best = int(probs[row].argmax())
        j = assigned[row]
        label, conf = (names[j], float(confidence[row])) if j >= 0 else (UNKNOWN, float(probs[row, best]))
        out[r.glyph_id] = GlyphLabel(r.glyph, r.glyph_id, label, conf, names[best], pred.top5[row],
                                     bool(pred.advances[row] > 0))
    for r in pred.records:  # the ones the renderer refused
        out.setdefault(r.glyph_id, GlyphLabel(r.glyph, r.glyph_id, UNKNOWN, 0.0, ""))
    for gid, name in pred.blank:
        out.setdefault(gid, GlyphLabel(name, gid, UNKNOWN, 0.0, ""))
    glyphs = [out[g] for g in sorted(out)]
    return FontLabels(pred.font, pred.family, pred.style, glyphs, pred.unrenderable, pred.script_shares)


def label_font(font: Path, predictor, min_confidence: float = DEFAULT_MIN_CONFIDENCE,
               script_prior: bool = True, views: int = TTA_VIEWS_FLAG.default,
               adapt_steps: int = ADAPT_STEPS_FLAG.default, join_prior: bool = True,
               look_alike_prior: bool = True) -> FontLabels:
    """Predict every glyph of the font's default face and assign labels jointly."""
    return assign_font(predict_font(font, predictor, script_prior, views, adapt_steps, join_prior, look_alike_prior),
                       min_confidence)


def case_pairs(label_names: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(capitals' columns, their lowercase letters' columns, whether the lowercase is the capital's shape drawn
    smaller: look_alike_prior's C c, O o, S s ...): the isolated forms of the bicameral letters the export knows
    in both cases."""
    from glyph_train.corpus.unicode_data import label
    from glyph_train.inference.look_alike_prior import LOOK_ALIKES

    column = {name: j for j, name in enumerate(label_names)}
    pairs = []
    for name, j in column.items():
        head, _, form = name.partition("_")
        if form != "isol" or not head.isdigit() or int(head) > 0x10FFFF:
            continue
        capital = chr(int(head))
        small = capital.lower()
        if capital.isupper() and len(small) == 1 and label(ord(small), "isol") in column:
            pairs.append((j, column[label(ord(small), "isol")]))
    if not pairs:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool)
    upper, lower = np.array(pairs, dtype=np.int64).T
    alike = [any({label_names[u], label_names[w]} <= set(s) for s in LOOK_ALIKES) for u, w in pairs]
    return upper, lower, np.array(alike, dtype=bool)


def always_drawn(label_names: list[str]) -> np.ndarray:
    """Per label, whether every font of its script draws it: the ASCII letters and digits, and every form of
    U+0621-U+064A (hamza and its seats, the 28 letters, teh marbuta, alef maksura, tatweel ...): the labels of
    launch/core_labels.txt, which bench_label_font scores."""
    from glyph_train.inference.font_prior import code_point

    def drawn(name: str) -> bool:
        cp = code_point(name)
        if cp is None:
            return False
        if cp < 0x80:
            return chr(cp).isalnum() and name == f"{cp}_isol"
        return 0x621 <= cp <= 0x64A

    return np.array([drawn(name) for name in label_names], dtype=bool)


def drawn_bonus(pred: FontPredictions, bonus: float = DRAWN_BONUS) -> np.ndarray:
    """Per label column, the log-probability its first glyph earns in the assignment: `bonus` for the
    always_drawn labels of the scripts the font draws (at least DRAWN_SCRIPT_SHARE of its glyphs by the script
    prior's estimate, made here when that prior is off: a Latin font's glyphs are not pushed to Arabic labels),
    0 for the rest."""
    from glyph_train.inference.font_prior import adapt_to_font, label_scripts

    groups, names = label_scripts(pred.label_names, other_class(pred.label_names))
    shares = pred.script_shares or dict(zip(names, adapt_to_font(pred.probs, groups)[1].tolist()))
    drawn = np.array([g >= 0 and shares.get(names[g], 0.0) >= DRAWN_SCRIPT_SHARE for g in groups], dtype=bool)
    return np.where(drawn & always_drawn(pred.label_names), bonus, 0.0)


def assign_labels(probs: np.ndarray, min_confidence: float, other: int | None = None,
                  duplicate_cost: float = DUPLICATE_COST,
                  cases: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                  tops: np.ndarray | None = None, extra_copies: int = EXTRA_COPIES,
                  bonus: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(column per row, -1 = unknown; the probability of that column) maximising the summed log-probability
    of the rows' labels less (k - 1) * duplicate_cost for the k-th row given a column, at most 1 + extra_copies
    rows a column (duplicate_cost inf: one row per column; 0: each row's argmax). Rows are glyphs in glyph
    order; a row may only take one of its top labels.
    `other` is the column of the export's other class: a row whose probs[row, other] beats the label it
    would get stays unknown, and the column is never assigned.
    `cases` (case_pairs): each lowercase column counts as at least LOWERCASE_AS_CAPITAL times its capital's,
    a hair more for a later row (fonts list capitals first, and copies of one drawing tie), and where the
    lowercase is the capital's shape drawn smaller (C c, S s ...), first for a row whose ink top (`tops`, em)
    is lower: of two drawings the fold makes tie the shorter is the lowercase (Roboto lists its Cyrillic copies
    of C S V W X Z after its c s v w x z, which glyph order alone made the lowercase; an accented capital is no
    taller capital, so A and À still go by glyph order). A row given the
    lowercase for its capital's likelihood has, as probability, the two cases' sum: its shape is the
    letter's, its case the font's.
    `bonus` (drawn_bonus): per column, the log-probability its first row earns (the labels every font of a
    script draws).
    Then rows whose label is less likely than min_confidence are unknown: the threshold hides labels, it
    never moves one to another glyph."""
    scores, sums = probs, probs
    if cases is not None and len(cases[0]):
        upper, lower, alike = cases
        folded = LOWERCASE_AS_CAPITAL * probs[:, upper] > probs[:, lower]
        rank = np.where(alike, _lowercase_order(tops, len(probs))[:, None], np.arange(len(probs))[:, None])
        later = 1 + 1e-3 * rank / max(len(probs), 1)
        scores, sums = probs.copy(), probs.copy()
        scores[:, lower] = np.where(folded, LOWERCASE_AS_CAPITAL * probs[:, upper] * later, probs[:, lower])
        sums[:, lower] = np.where(folded, probs[:, lower] + probs[:, upper], probs[:, lower])
    out = _assign_distinct(scores, other, duplicate_cost, extra_copies, bonus)
    confidence = sums[np.arange(len(out)), np.maximum(out, 0)]
    keep = (out >= 0) & (confidence >= min_confidence)
    return np.where(keep, out, -1), np.where(keep, confidence, 0.0)


def _lowercase_order(tops: np.ndarray | None, rows: int) -> np.ndarray:
    """Each row's rank as a lowercase for the case fold: tallest ink first (tops equal to 0.01 em tie), then
    glyph order; glyph order alone without `tops`."""
    if tops is None:
        return np.arange(rows, dtype=np.float64)
    order = np.lexsort((np.arange(rows), -np.round(tops, 2)))
    rank = np.empty(rows)
    rank[order] = np.arange(rows)
    return rank


def _assign_distinct(probs: np.ndarray, other: int | None, duplicate_cost: float,
                     extra_copies: int = EXTRA_COPIES, bonus: np.ndarray | None = None) -> np.ndarray:
    """The assignment before the confidence threshold: columns are (label, copy) slots, the copy-th slot
    costing copy * duplicate_cost more and the first bonus[label] less, plus one unknown slot per row. A row
    has edges only to its top labels' slots and its own unknown slot, so the problem is sparse (scipy's
    LAPJVsp): time and memory grow with the glyphs, not with their square as the dense matrix of
    linear_sum_assignment did (12 s and 1 GB for a 6,700-glyph font, out of memory for a CJK font;
    BENCHMARKS.md §14o)."""
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import min_weight_full_bipartite_matching

    n, c = probs.shape
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = min(CANDIDATES_PER_GLYPH, c)
    top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
    rows = np.repeat(np.arange(n), k)
    labels = top.ravel()
    if other is not None:  # the other class is never assigned
        rows, labels = rows[labels != other], labels[labels != other]
    columns, slot = np.unique(labels, return_inverse=True)
    m = len(columns)
    copies = 1 if math.isinf(duplicate_cost) else 1 + extra_copies
    cost = -np.log(np.clip(probs[rows, labels], 1e-300, 1.0))
    # leaving a row unknown is allowed only where the export can say "none of its labels"; else it costs far
    # more than any label could
    unknown = -np.log(np.clip(probs[:, other], 1e-300, 1.0)) if other is not None else np.full(n, 1e6)
    edge_rows = np.concatenate([rows] * copies + [np.arange(n)])
    edge_cols = np.concatenate([slot + copy * m for copy in range(copies)] + [copies * m + np.arange(n)])
    earned = bonus[labels] if bonus is not None else 0.0
    weights = np.concatenate([cost - earned] + [cost + copy * duplicate_cost for copy in range(1, copies)]
                             + [unknown])
    # + 1 (+ the bonus): the matching needs positive weights, and a constant on every row's one edge moves no
    # optimum
    offset = 1.0 + (float(bonus.max()) if bonus is not None and len(bonus) else 0.0)
    graph = coo_array((weights + offset, (edge_rows, edge_cols)), shape=(n, copies * m + n)).tocsr()
    matched_rows, matched_cols = min_weight_full_bipartite_matching(graph)
    out = np.full(n, -1, dtype=np.int64)
    is_label = matched_cols < copies * m
    out[matched_rows[is_label]] = columns[matched_cols[is_label] % m]
    return out


def write_csv(path: Path, glyphs: list[GlyphLabel]) -> None:
    """The CSV, written to a temporary file beside `path` and renamed into place."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["glyph", "label", "confidence", "top5"])
    for g in glyphs:
        writer.writerow([g.glyph, g.label, f"{g.confidence:.4f}", ";".join(f"{lab}:{p:.4f}" for lab, p in g.top5)])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(buf.getvalue())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
