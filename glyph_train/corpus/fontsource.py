"""Google Fonts families from npm's @fontsource/* packages, for `glyph-train build-db --fontsource`.

A package ships one WOFF2 per weight, style and unicode-range subset (`files/ID-SUBSET-WEIGHT-STYLE.woff2`,
ranges in `unicode.json`). One `FontsourceFace` = one (family, weight, style): a single fonts row holding
the glyphs of all its subsets once. Each code point is drawn by the subset whose unicode range holds it, as
a browser would pick it, so Arabic letters are shaped (init/medi/fina) with the subset that carries the
Arabic GSUB. The family is the package's own (metadata.json), never a subset's name table, which may call
a weight "Lateef ExtraBold" and would put one family on both sides of a split.

Packages are fetched with `npm pack` into a download cache and read from there on every later run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from dataclasses import asdict, dataclass, fields
from importlib.resources import files
from pathlib import Path
from typing import Callable, Iterable

from glyph_train import outputs
from glyph_train.corpus.fonts import FontError, FontFace, list_faces, sfnt_data
from glyph_train.corpus.shaping import Shaper
from glyph_train.errors import GlyphTrainError

FAMILY_LIST = "fontsource_families.txt"
NPM_SCOPE = "@fontsource/"
NPM_BATCH = 25  # packages per `npm pack` call: npm's start-up costs about a second
NPM_TIMEOUT_S = 600
WEIGHT_NAMES = {100: "Thin", 200: "ExtraLight", 300: "Light", 400: "Regular", 500: "Medium", 600: "SemiBold",
                700: "Bold", 800: "ExtraBold", 900: "Black"}
NO_NPM = ("--fontsource needs npm to download packages (install it: apt-get install npm, or Node.js from "
          "nodejs.org)")


# ------------------------------------------------------------------------------------------- family lists


def family_sets() -> dict[str, list[tuple[str, str]]]:
    """Set name -> [(package name, style)] from the packaged list."""
    sets: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in (files("glyph_train") / "resources" / FAMILY_LIST).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            current = sets.setdefault(line[1:-1], [])
        elif line and current is not None:
            name, style = line.split()
            current.append((name, style))
    return sets


def package_name(text: str) -> str:
    """'Noto Naskh Arabic', '@fontsource/noto-naskh-arabic' and 'noto-naskh-arabic' name one package."""
    text = text.strip()
    if text.startswith(NPM_SCOPE):
        text = text[len(NPM_SCOPE):]
    return re.sub(r"[\s_]+", "-", text.lower())


def resolve_names(spec: str) -> tuple[list[str], set[str]]:
    """A comma list of package/family names and set names (`arabic`, `default`) -> (packages in order,
    the ones the user named directly: a missing one of those is an error, a listed one only a warning)."""
    sets = family_sets()
    names: dict[str, None] = {}
    named: set[str] = set()
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item.lower() in sets:
            names.update((name, None) for name, _ in sets[item.lower()])
        else:
            name = package_name(item)
            if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*", name):
                raise GlyphTrainError(f"--fontsource: {item!r} is not a package or family name; give names such "
                                      f"as lalezar or 'Noto Naskh Arabic', or a set: {', '.join(sets)}")
            names[name] = None
            named.add(name)
    if not names:
        raise GlyphTrainError(f"--fontsource names nothing; give package names or a set: {', '.join(sets)}")
    return list(names), named


# ---------------------------------------------------------------------------------------------- download


def default_cache_dir() -> Path:
    """fontsource/ in the user's glyph-train cache folder (outputs.default_cache_dir)."""
    return outputs.default_cache_dir() / "fontsource"


def fetch_packages(names: Iterable[str], cache: Path, warn: Callable[[str], None],
                   required: set[str] = frozenset()) -> list[Path]:
    """The unpacked package directory of each name, downloading those not in `cache` with `npm pack`.
    A package npm cannot give is skipped with a warning, or an error when it is in `required`."""
    names = list(names)
    missing = [n for n in names if not _complete(cache / n)]
    if missing:
        npm = shutil.which("npm")
        if npm is None:
            if required & set(missing):
                raise GlyphTrainError(f"{NO_NPM}; {len(missing)} package(s) are not in {cache}")
            warn(f"{NO_NPM}; skipping {len(missing)} package(s) not yet in {cache}")
        else:
            cache.mkdir(parents=True, exist_ok=True)
            failed = _npm_pack_all(npm, missing, cache)
            for name, reason in failed.items():
                if name in required:
                    raise GlyphTrainError(f"--fontsource: npm cannot fetch {NPM_SCOPE}{name} ({reason}); "
                                          "check the name (https://fontsource.org lists them)")
                warn(f"skipped {NPM_SCOPE}{name}: npm cannot fetch it ({reason})")
    return [cache / n for n in names if _complete(cache / n)]


def _complete(pkg: Path) -> bool:
    return (pkg / "metadata.json").is_file()


def _npm_pack_all(npm: str, names: list[str], cache: Path) -> dict[str, str]:
    """Download and unpack `names` into cache/NAME; returns {name: reason} for those that failed."""
    failed: dict[str, str] = {}
    for start in range(0, len(names), NPM_BATCH):
        batch = names[start:start + NPM_BATCH]
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
            error = _npm_pack(npm, batch, Path(tmp))
            if error and len(batch) > 1:  # one bad name fails the whole call: find it one by one
                for name in batch:
                    error = _npm_pack(npm, [name], Path(tmp))
                    if error:
                        failed[name] = error
            elif error:
                failed[batch[0]] = error
            for name in batch:
                if name not in failed:
                    try:
                        _unpack(Path(tmp), name, cache)
                    except (OSError, tarfile.TarError, GlyphTrainError) as err:
                        failed[name] = f"unreadable package: {err}"
    return failed


def _npm_pack(npm: str, names: list[str], dest: Path) -> str | None:
    """`npm pack` the packages into dest; None on success, else npm's first error line."""
    cmd = [npm, "pack", "--json", "--pack-destination", str(dest), *(NPM_SCOPE + n for n in names)]
    try:
        done = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"npm pack took over {NPM_TIMEOUT_S} s"
    if done.returncode == 0:
        return None
    lines = [ln.strip() for ln in done.stderr.splitlines() if "ERR" in ln and ln.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else f"npm exit status {done.returncode}")[:200]


def _unpack(tmp: Path, name: str, cache: Path) -> None:
    """Unpack metadata.json, unicode.json and files/*.woff2 of NAME's tarball into cache/NAME (atomically:
    a directory appears whole or not at all, so an interrupted download is fetched again)."""
    tarballs = sorted(tmp.glob(f"fontsource-{name}-[0-9]*.tgz"))
    if not tarballs:
        raise GlyphTrainError("npm pack wrote no tarball")
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".{name}-"))
    try:
        with tarfile.open(tarballs[-1]) as tar:
            for member in tar.getmembers():
                rel = member.name.removeprefix("package/")
                keep = rel in ("metadata.json", "unicode.json", "LICENSE") or (
                    rel.startswith("files/") and rel.endswith(".woff2") and "/" not in rel[len("files/"):])
                if keep and member.isfile():
                    target = staging / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with tar.extractfile(member) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
        if not (staging / "metadata.json").is_file():
            raise GlyphTrainError("no metadata.json in the package")
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, cache / name)
        except OSError:
            if not _complete(cache / name):  # not a concurrent run that unpacked it first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -------------------------------------------------------------------------------------------------- faces


@dataclass(frozen=True)
class FontsourceFace(FontFace):
    """One weight and style of a package: its subset files, each with the code points it is used for.
    `path` is the package's files/ID-WEIGHT-STYLE (no such file: the subsets share that stem)."""

    subsets: tuple[tuple[Path, tuple[tuple[int, int], ...]], ...] = ()

    def shaper(self) -> "SubsetShaper":
        return SubsetShaper(self.subsets)


class SubsetShaper:
    """The Shaper interface over a family's subset files: each code point goes to the subset whose
    unicode range holds it (else the first subset whose cmap has it). Glyph ids are (subset, gid)."""

    def __init__(self, subsets: Iterable[tuple[Path, tuple[tuple[int, int], ...]]]) -> None:
        self.parts = [(Shaper(sfnt_data(path)), ranges) for path, ranges in subsets]
        self._owner: dict[int, int] = {}

    def cmap(self) -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        in_range: set[int] = set()
        for i, (shaper, ranges) in enumerate(self.parts):
            for cp, gid in shaper.cmap().items():
                inside = any(lo <= cp <= hi for lo, hi in ranges)
                if cp not in out or (inside and cp not in in_range):
                    out[cp] = (i, gid)
                    if inside:
                        in_range.add(cp)
        self._owner = {cp: i for cp, (i, _) in out.items()}
        return out

    def glyph_outline(self, gid: tuple[int, int]) -> str:
        return self.parts[gid[0]][0].glyph_outline(gid[1])

    def form_outline(self, cp: int, form: str) -> str:
        return self.parts[self._part(cp)][0].form_outline(cp, form)

    def figure_variants(self, cp: int) -> list[tuple[str, tuple[int, int]]]:
        part = self._part(cp)
        return [(feature, (part, gid)) for feature, gid in self.parts[part][0].figure_variants(cp)]

    def _part(self, cp: int) -> int:
        if not self._owner:
            self.cmap()
        return self._owner[cp]


def package_faces(pkg: Path) -> list[FontsourceFace]:
    """One face per (weight, style) of an unpacked package; raises FontError naming what is wrong."""
    try:
        meta = json.loads((pkg / "metadata.json").read_text(encoding="utf-8"))
        ranges = json.loads((pkg / "unicode.json").read_text(encoding="utf-8")) \
            if (pkg / "unicode.json").is_file() else {}
        # packages published before Fontsource 5 say fontId/fontName (euphoria-script, condiment)
        ident, family = meta.get("id") or meta["fontId"], meta.get("family") or meta["fontName"]
        subsets, weights, styles = meta["subsets"], meta["weights"], meta["styles"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FontError(f"unreadable package metadata ({type(err).__name__}: {err})") from None
    faces = []
    for weight in weights:
        for style in styles:
            stem = f"{ident}-{weight}-{style}"
            parts = [(pkg / "files" / f"{ident}-{subset}-{weight}-{style}.woff2", _parse_ranges(ranges.get(subset, "")))
                     for subset in subsets]
            parts = [(path, rng) for path, rng in parts if path.is_file()]
            if not parts:
                continue
            # metrics from a subset that has Latin x/H when there is one (HarfBuzz measures them if OS/2 lacks them)
            metrics_file = next((p for p, _ in parts if "-latin-" in p.name), parts[0][0])
            base = list_faces(metrics_file)[0]
            digest = hashlib.sha256()
            for path, _ in parts:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            style_name = WEIGHT_NAMES.get(int(weight), str(weight))
            if style != "normal":
                style_name = style.title() if style_name == "Regular" else f"{style_name} {style.title()}"
            values = {f.name: getattr(base, f.name) for f in fields(FontFace)}
            values.update(path=pkg / "files" / stem, face_index=0, coords=(), file_hash=digest.hexdigest(),
                          family_name=family, style_name=style_name)
            faces.append(FontsourceFace(**values, subsets=tuple(parts)))
    if not faces:
        raise FontError("no WOFF2 files for its weights and styles")
    return faces


def _parse_ranges(text: str) -> tuple[tuple[int, int], ...]:
    """'U+0600-06FF,U+200C' -> ((0x600, 0x6FF), (0x200C, 0x200C))."""
    out = []
    for part in text.split(","):
        part = part.strip().upper().removeprefix("U+")
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            out.append((int(lo, 16), int(hi or lo, 16)))
        except ValueError:
            continue  # a wildcard form (U+4??) we do not need for the scripts we read
    return tuple(out)


def fontsource_faces(spec: str, warn: Callable[[str], None], cache: Path | None = None
                     ) -> tuple[list[FontsourceFace], int]:
    """Faces of every package named by `spec` (downloaded if needed) and the number of packages skipped."""
    names, named = resolve_names(spec)
    cache = cache or default_cache_dir()
    pkgs = fetch_packages(names, cache, warn, required=named)
    faces: list[FontsourceFace] = []
    skipped = len(names) - len(pkgs)
    for pkg in pkgs:
        try:
            faces += package_faces(pkg)
        except FontError as err:
            warn(f"skipped {NPM_SCOPE}{pkg.name}: {err}")
            skipped += 1
    return faces, skipped


def add_package_faces(conn: sqlite3.Connection, package_faces: list[FontsourceFace], faces: list[FontFace],
                      known: set[str], warn: Callable[[str], None]) -> int:
    """Append to `faces` the package faces to read, and return how many are already in the DB.

    A family another source already brings (fontpkg, font files: in the DB or in `faces`) is left out, so
    no family is in the corpus twice; a family some of whose package faces are in the DB came from here,
    and its missing weights are still added (an interrupted run is completed)."""
    from glyph_train.corpus.font_rows import family_key

    present = {family_key(f) for (f,) in conn.execute("SELECT DISTINCT family_name FROM fonts") if f}
    present |= {family_key(f.family_name) for f in faces}
    ours = {family_key(f.family_name) for f in package_faces if f.file_hash in known}
    already, dropped = 0, set()
    for face in package_faces:
        key = family_key(face.family_name)
        if face.file_hash in known:
            already += 1
        elif key in present and key not in ours:
            dropped.add(face.family_name)
        else:
            known.add(face.file_hash)
            faces.append(face)
    if dropped:
        warn(f"fontsource: {len(dropped)} famil{'y' if len(dropped) == 1 else 'ies'} already in the DB or the "
             f"other inputs, not added again: {', '.join(sorted(dropped))}")
    return already


def face_summary(face: FontsourceFace) -> dict:
    """The face as plain data (for tests and debugging)."""
    return {k: v for k, v in asdict(face).items() if k != "subsets"}
