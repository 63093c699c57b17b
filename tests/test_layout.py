"""The house stays in its wings: the package's imports (read with ast, nothing imported) run one
way, down the order declared here, with no cycle; a facegan module imported inside a function
says in a comment which heavy dependency that keeps unloaded; wing __init__ files stay docstrings."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "facegan"
# Bottom to top: a module may import its own wing and the wings below it, never one above.
WINGS = [
    ("helpers", ["facegan.version", "facegan.files", "facegan.progress", "facegan.cli", "facegan.runtime",
                 "facegan.distribution"]),
    ("data", ["facegan.data"]),
    ("networks", ["facegan.networks"]),
    ("metrics", ["facegan.metrics"]),
    ("toolbox", ["facegan.toolbox"]),
    ("watch", ["facegan.watch"]),
    ("training", ["facegan.training"]),
    ("commands", ["facegan.train", "facegan.pack", "facegan.evaluate", "facegan.sample", "facegan.report",
                  "facegan.attributes", "facegan.project", "facegan.edit", "facegan"]),
]
DOCSTRING_ONLY = ["facegan.data", "facegan.data.sources", "facegan.training", "facegan.metrics", "facegan.watch",
                  "facegan.toolbox"]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def wing(module: str) -> int:
    """The index in WINGS of the longest prefix that names `module`'s wing."""
    best, index = -1, None
    for i, (_, prefixes) in enumerate(WINGS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    assert index is not None, f"{module}: in no wing of WINGS; add it there"
    return index


def imports(module: str, path: Path, known: set[str]) -> list[tuple[str, int, bool, str]]:
    """(imported facegan module, line, inside a function, source line) for each import."""
    lines = path.read_text().splitlines()
    found = []

    def resolve(name: str) -> str:
        while name not in known and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            targets = []
            if isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{path}:{child.lineno}: a relative import; facegan imports absolutely"
                if (child.module or "").startswith("facegan"):
                    targets = [resolve(f"{child.module}.{a.name}") for a in child.names]
            elif isinstance(child, ast.Import):
                targets = [resolve(a.name) for a in child.names if a.name.startswith("facegan")]
            found.extend((target, child.lineno, inner, lines[child.lineno - 1]) for target in targets)
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return [f for f in found if f[0] != module]


def test_imports_run_down_the_wings_without_cycles():
    mods = modules()
    known = set(mods)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    wrong = []
    for module, path in mods.items():
        for target, line, nested, text in imports(module, path, known):
            if target == "facegan" and module != "facegan":  # `from facegan import networks` names a wing
                continue
            edges[module].add(target)
            if wing(target) > wing(module):
                wrong.append(f"{path.relative_to(REPO)}:{line}: {module} ({WINGS[wing(module)][0]}) imports "
                             f"{target} ({WINGS[wing(target)][0]}), a wing above it")
            if WINGS[wing(module)][0] == WINGS[wing(target)][0] == "commands":
                wrong.append(f"{path.relative_to(REPO)}:{line}: a command imports another command ({target})")
            if nested and "#" not in text:
                wrong.append(f"{path.relative_to(REPO)}:{line}: {target} imported inside a function without a "
                             "comment saying which heavy dependency that keeps unloaded")
    assert not wrong, "\n".join(wrong)
    # No cycle: a depth-first search finds no module on its own path.
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])


def test_wing_faces_stay_docstrings_and_the_front_door_stays_small():
    mods = modules()
    for name in DOCSTRING_ONLY:
        tree = ast.parse(mods[name].read_text())
        assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr), \
            f"{mods[name]}: a wing's __init__ holds its docstring only (a face would load heavy modules)"
    top = sorted("facegan." + p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py")
    front = dict(WINGS)["helpers"] + dict(WINGS)["commands"]  # one module per command, and the small helpers
    stray = [m for m in top if m not in front]
    assert not stray, f"facegan/ has top-level modules that are neither a command nor a helper: {stray}; the " \
        "library belongs in a wing"
    assert len(dict(WINGS)["helpers"]) <= 6, "the helpers grow: move what is not a helper into a wing"


def test_components_get_their_section_of_the_config_not_trainconfig():
    """Only the command, the config (with its presets) and the loop import TrainConfig; the others
    get a section, a dataclass beside them that the loop fills (loop.section)."""
    allowed = {"facegan.train", "facegan.training.config", "facegan.training.presets", "facegan.training.loop"}
    users = {name for name, path in modules().items()
             if re.search(r"^from facegan\.training\.config import .*\bTrainConfig\b", path.read_text(), re.M)}
    assert users <= allowed, f"import TrainConfig outside the command and the loop: {sorted(users - allowed)}"
    assert {"facegan.training.upkeep", "facegan.training.evaluation", "facegan.training.budget",
            "facegan.training.state"}.isdisjoint(users)


def test_the_layout_test_sees_a_wrong_import(tmp_path):
    """The checker itself: an upward import and an uncommented function-level import are caught."""
    fake = tmp_path / "facegan" / "data"
    fake.mkdir(parents=True)
    bad = fake / "x.py"
    bad.write_text("from facegan.training import loop\n\ndef f():\n    from facegan.metrics import score\n")
    found = imports("facegan.data.x", bad, {"facegan.data.x", "facegan.training.loop", "facegan.metrics.score"})
    assert [(t, wing(t) > wing("facegan.data.x"), nested) for t, _, nested, _ in found] == [
        ("facegan.training.loop", True, False), ("facegan.metrics.score", True, True)]
