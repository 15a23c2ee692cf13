"""The package's stage folders import only the stages before them, so a reader knows what each may touch."""

import ast
from pathlib import Path

import glyph_train

PACKAGE = Path(glyph_train.__file__).parent
STAGES = ["corpus", "cache", "model", "training", "evaluation", "inference", "serve"]  # in pipeline order
# Top-level modules every stage may use; they import only each other. flags: the Flag type every command's
# flags are declared with, so a stage can declare its flags where their values live (STYLE: one definition
# per flag). cli.py is not among them: it is the console script, and no library module imports it.
SHARED = {"errors", "outputs", "atomic", "flags"}


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "glyph_train":
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "glyph_train" else [node.module]
            found += [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "glyph_train"]
    return found


def test_every_module_is_in_a_stage_or_shared() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert top == SHARED | {"train", "cli"}, "a new top-level module belongs in a stage folder (or in SHARED, on purpose)"
    assert folders == set(STAGES)


def test_stages_import_only_earlier_stages() -> None:
    wrong = []
    for stage in STAGES:
        allowed = set(STAGES[: STAGES.index(stage) + 1]) | SHARED
        for path in sorted((PACKAGE / stage).rglob("*.py")):
            for line, module in _imports(path):
                if module.split(".")[1] not in allowed:
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_shared_modules_import_no_stage() -> None:
    wrong = [f"{name}.py:{line} imports {module}" for name in sorted(SHARED)
             for line, module in _imports(PACKAGE / f"{name}.py") if module.split(".")[1] not in SHARED]
    assert not wrong, "\n".join(wrong)
