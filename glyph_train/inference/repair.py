"""A repaired copy of a font from glyph labels: a new cmap for the `{cp}_isol` labels and GSUB single
substitutions from each character's isolated glyph to its other predicted forms (Arabic `init`/`medi`/`fina`,
a digit's `numr`/`dnom`/`sups`/`sinf` figures), built with fontTools feaLib, so HarfBuzz shapes text with it.
The input font is never written (a copy goes to OUT by a temporary file and a rename). The old cmap and GSUB
are replaced, not merged: they are what was broken.

An Arabic letter whose isolated glyph has no label (below --min-confidence, say) while its joined forms have
one is mapped to a stand-in, its final glyph (else initial, else medial), so its joined forms still shape; only
the letter standing alone then shows the wrong glyph, where otherwise every form of it was .notdef. The report
lists each stand-in (RepairReport.stand_ins).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from fontTools.feaLib.builder import addOpenTypeFeaturesFromString
from fontTools.feaLib.error import FeatureLibError
from fontTools.ttLib import TTFont, TTLibError, newTable
from fontTools.ttLib.tables._c_m_a_p import CmapSubtable

from glyph_train.corpus.unicode_data import LABEL_FORMS
from glyph_train.errors import GlyphTrainError

LABEL = re.compile(rf"^(\d+)_({'|'.join(LABEL_FORMS)})$")
FEA_GLYPH = re.compile(r"^[A-Za-z_.][A-Za-z0-9_.\-]{0,62}$")  # names feaLib takes as they are (escaped with '\')
SUBSTITUTED = tuple(f for f in LABEL_FORMS if f != "isol")  # GSUB features from the isolated glyph to the form
STAND_INS = ("fina", "init", "medi")  # what the cmap maps when a letter has no isolated glyph, in preference


@dataclass
class RepairReport:
    cmap: dict[int, str] = field(default_factory=dict)  # code point -> glyph
    substitutions: dict[str, dict[str, str]] = field(default_factory=dict)  # feature -> {isol glyph: form glyph}
    unmapped: list[str] = field(default_factory=list)  # one line per label that could not go into the font
    stand_ins: list[str] = field(default_factory=list)  # one line per letter mapped to a joined form (STAND_INS)

    def summary(self) -> str:
        subs = ", ".join(f"{len(v)} {k}" for k, v in self.substitutions.items() if v) or "no GSUB substitutions"
        stand_ins = f", {len(self.stand_ins)} letters without an isolated glyph" if self.stand_ins else ""
        return f"cmap of {len(self.cmap)} code points{stand_ins}, {subs}; {len(self.unmapped)} labels not mapped"


def plan_repair(assignment: dict[str, str]) -> RepairReport:
    """What goes into the font for {glyph name: label}: cmap entries and substitutions to the other forms."""
    report = RepairReport(substitutions={f: {} for f in SUBSTITUTED})
    forms: dict[int, dict[str, str]] = defaultdict(dict)
    for glyph, label in sorted(assignment.items()):
        m = LABEL.match(label)
        if not m:
            report.unmapped.append(f"{glyph}: label {label} is not {{code point}}_{{{'|'.join(LABEL_FORMS)}}}")
            continue
        cp, form = int(m.group(1)), m.group(2)
        if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
            report.unmapped.append(f"{glyph}: {label} names no Unicode scalar value")
            continue
        if form in forms[cp]:  # the joint assignment gives each label one glyph; a hand-made one may not
            report.unmapped.append(f"{glyph}: {label} already given to {forms[cp][form]}")
            continue
        forms[cp][form] = glyph
    for cp, by_form in sorted(forms.items()):
        isol = by_form.get("isol")
        stand_in = next((f for f in STAND_INS if f in by_form), None)
        if isol is None and stand_in is not None:
            isol = by_form[stand_in]
            report.stand_ins.append(f"{isol}: U+{cp:04X} has no glyph labelled {cp}_isol; the cmap maps its {stand_in} "
                                    f"glyph so that its joined forms shape (alone, it shows that glyph)")
        if isol is not None:
            report.cmap[cp] = isol
        for form in SUBSTITUTED:
            glyph = by_form.get(form)
            if glyph is None:
                continue
            if isol is None:
                report.unmapped.append(f"{glyph}: {cp}_{form} (U+{cp:04X}) has no isolated glyph to substitute from")
            elif glyph != isol:
                report.substitutions[form][isol] = glyph
    return report


def write_repaired_font(src: Path, out: Path, assignment: dict[str, str]) -> RepairReport:
    """Write a copy of `src` with a cmap and GSUB built from `assignment` to `out`."""
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve() or (out.exists() and os.path.samefile(out, src)):
        raise GlyphTrainError(f"--write-font {out} is the input font; choose another path")
    try:
        font = TTFont(src)
    except (TTLibError, OSError, AssertionError) as err:
        raise GlyphTrainError(f"{src}: cannot read as a font to repair ({err}); a font collection must be split first") from None
    report = plan_repair(assignment)
    order = set(font.getGlyphOrder())
    missing = [g for g in assignment if g not in order]
    if missing:
        raise GlyphTrainError(f"{src}: no glyph named {missing[0]} (labels for another font?)")
    _set_cmap(font, report.cmap)
    _set_gsub(font, report)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=src.suffix, dir=out.parent)
    os.close(fd)
    try:
        font.save(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return report


def _set_cmap(font: TTFont, mapping: dict[int, str]) -> None:
    table = newTable("cmap")
    table.tableVersion = 0
    table.tables = []
    bmp = {cp: g for cp, g in mapping.items() if cp <= 0xFFFF}
    subtables = [(0, 3, 4, bmp), (3, 1, 4, bmp)]
    if len(bmp) < len(mapping):
        subtables += [(0, 4, 12, mapping), (3, 10, 12, mapping)]
    for platform, encoding, fmt, cmap in subtables:
        sub = CmapSubtable.newSubtable(fmt)
        sub.platformID, sub.platEncID, sub.language = platform, encoding, 0
        sub.cmap = dict(cmap)
        table.tables.append(sub)
    font["cmap"] = table


def _set_gsub(font: TTFont, report: RepairReport) -> None:
    if "GSUB" in font:
        del font["GSUB"]
    lines = ["languagesystem DFLT dflt;", "languagesystem arab dflt;"]
    for form, subs in report.substitutions.items():
        usable = {}
        for isol, glyph in sorted(subs.items()):
            bad = [g for g in (isol, glyph) if not FEA_GLYPH.match(g)]
            if bad:
                report.unmapped.append(f"{glyph}: {form} substitution skipped, glyph name {bad[0]!r} cannot be "
                                       "written in a feature file")
            else:
                usable[isol] = glyph
        report.substitutions[form] = usable
        if usable:
            lines.append(f"feature {form} {{")
            lines += [f"    sub \\{isol} by \\{glyph};" for isol, glyph in usable.items()]
            lines.append(f"}} {form};")
    if not any(report.substitutions.values()):
        return
    try:
        addOpenTypeFeaturesFromString(font, "\n".join(lines) + "\n", tables={"GSUB"})
    except FeatureLibError as err:
        raise GlyphTrainError(f"cannot build the GSUB table ({err})") from None
