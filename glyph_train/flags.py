"""Command-line flags declared once and added to every parser that takes them.

A flag is declared where the value it sets lives: on the dataclass field it fills (`flag_field`, e.g.
GlyphFilter's selection flags, RenderParams' --img-size and --fit, TrainConfig's own), or as a module
constant next to the code that uses it (`Flag`, e.g. --split, --num-proc, --checkpoint). Commands add it
with `Flag.add`, so its type, default, choices and help are the same wherever it appears, and --help
always shows the default the code uses. tests/test_flags.py walks every parser to keep it that way.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Callable


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def non_negative_int(text: str) -> int:
    """argparse type: a whole number >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return int(text)


@dataclass(frozen=True)
class Flag:
    name: str  # "--img-size"; "" in a `flag_field`, where the field's name gives it
    help: str  # what it does, without the default: `add` appends that
    default: Any = None
    type: Callable[[str], Any] | None = None  # None: text, or an on/off switch when the default is a bool
    choices: tuple | None = None
    metavar: str | None = None
    default_text: str | None = None  # shown in --help instead of the default (a computed one, say)

    @property
    def switch(self) -> bool:
        return isinstance(self.default, bool)

    def help_text(self) -> str:
        shown = self.default_text or (None if self.default is None or self.switch else self.default)
        return self.help if shown is None else f"{self.help} (default: {shown})"

    def add(self, parser: argparse.ArgumentParser | Any, *, unset: bool = False, **extra: Any) -> argparse.Action:
        """Add this flag to a parser or argument group. `unset`: the parsed value is None when the flag is
        not given (so a config file can fill it; --help still shows the real default), and switches get a
        --no-NAME form to turn off what the file turned on. `extra`: argparse's required, dest."""
        kw: dict[str, Any] = {"help": self.help_text(), **extra}
        if self.switch:
            action = "store_true" if not (unset or self.default) else argparse.BooleanOptionalAction
            return parser.add_argument(self.name, action=action, default=None if unset else self.default, **kw)
        return parser.add_argument(self.name, type=self.type, default=None if unset else self.default,
                                   choices=self.choices, metavar=self.metavar, **kw)

    def variant(self, **changes: Any) -> Flag:
        """The same flag with a deliberate difference (another default, say); tests/test_flags.py lists each."""
        return dataclasses.replace(self, **changes)

    def field(self, **changes: Any) -> Any:
        """A dataclass field filled by this flag (`changes`: as in `variant`)."""
        flag = self.variant(**changes)
        return field(default=flag.default, metadata={"flag": flag})


def flag_field(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field that is also the flag named after it (`img_size` -> `--img-size`); a number's
    type comes from its default."""
    if "type" not in kw and not isinstance(default, bool):
        kw["type"] = {int: int, float: float}.get(type(default))
    return Flag("", help, default, **kw).field()


def flags_of(cls: type) -> dict[str, Flag]:
    """The flags of a dataclass's fields, by field name, each named after its field."""
    return {f.name: dataclasses.replace(f.metadata["flag"], name="--" + f.name.replace("_", "-"))
            for f in fields(cls) if "flag" in f.metadata}
