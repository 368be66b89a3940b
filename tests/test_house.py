"""The package's layout and words, kept as docs/architecture.md states them: folders by concern, empty
subpackage __init__ files, short functions and modules, behaviour read from the registries, layers, and one
word per concept (the variant's field, wildcard and column)."""

import ast
import re
from dataclasses import fields
from pathlib import Path

from peftcode.jobs.versions import PACKAGE, local_imports
from peftcode.study.config import Cell
from peftcode.study.families import FAMILIES
from peftcode.study.kinds import KINDS

REPO = PACKAGE.parents[1]
MODULES = sorted(PACKAGE.rglob("*.py"))
# The beam search's vectorised step loop reads best as one body (its state is a handful of tensors).
LONG_ALLOWED = {("inference/beam_search.py", "beam_search")}
REGISTRIES = {"study/kinds.py", "study/families.py"}
LAYER = {
    "jobs": 0,
    "study": 1,
    "hardware": 2,
    "data": 2,
    "models": 3,
    "training": 4,
    "inference": 4,
    "sandbox": 4,
    "evaluation": 5,
    "planning": 6,
    "report": 6,
}
# The one edge back, named in docs/architecture.md: the tests column's format, which data writes.
CROSS_EDGES = {("data.presets", "sandbox.tests_column")}


def _name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE).with_suffix("").parts)


def test_the_top_level_shows_the_concerns_and_subpackages_hold_no_code():
    top = [p.name for p in PACKAGE.glob("*.py")]
    assert len(top) <= 8, top
    folders = {p.parent for p in MODULES if p.parent != PACKAGE}
    assert {f.name for f in folders} == set(LAYER)
    for folder in folders:
        body = ast.parse((folder / "__init__.py").read_text()).body
        assert all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body), folder


def test_no_function_over_80_lines_and_no_module_over_400():
    long = []
    for path in MODULES:
        text = path.read_text()
        assert len(text.splitlines()) <= 400, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                where = (str(path.relative_to(PACKAGE)), node.name)
                if node.end_lineno - node.lineno + 1 > 80 and where not in LONG_ALLOWED:
                    long.append(where)
    assert long == []


def _compared_names(tree) -> set[str]:
    """String constants that a comparison, a membership test or a dictionary key names."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for part in (node.left, *node.comparators):
                elements = part.elts if isinstance(part, ast.Tuple | ast.List | ast.Set) else [part]
                found |= {
                    e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)
                }
        if isinstance(node, ast.Dict):
            found |= {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
    return found


def test_kinds_and_families_are_read_from_their_registries_only():
    names = set(KINDS) | set(FAMILIES) | {f.peft_task_type for f in FAMILIES.values()}
    offending = {}
    for path in MODULES:
        if str(path.relative_to(PACKAGE)) in REGISTRIES:
            continue
        hits = _compared_names(ast.parse(path.read_text())) & names
        if hits:
            offending[_name(path)] = hits
    quoted = "|".join(re.escape(name) for name in names)
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow").rglob("*.smk"))]:
        hits = set(re.findall(rf"""(?:==|!=|\bin)\s*\(?["']({quoted})["']""", path.read_text()))
        if hits:
            offending[path.name] = hits
    assert offending == {}


def test_layers_import_only_those_before_them_but_the_one_named_edge():
    back = set()
    for path in MODULES:
        module = _name(path)
        if path.name == "__init__.py":
            continue
        for imported in local_imports(module):
            if imported.split(".")[0] != module.split(".")[0]:
                if LAYER[imported.split(".")[0]] >= LAYER[module.split(".")[0]]:
                    back.add((module, imported))
    assert back == CROSS_EDGES


def test_the_variant_is_one_word_in_the_cell_the_wildcards_and_the_tables():
    from peftcode.report.tables import CELL_COLUMNS

    assert [f.name for f in fields(Cell)] == ["model", "variant", "dataset"] == CELL_COLUMNS
    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    wildcards = set(re.findall(r"\{\{(\w+)\}\}", rules))
    assert wildcards == {"model", "variant", "dataset", "encoder"}
    assert "{{method}}" not in rules and "w.method" not in rules
    glossary = (REPO / "docs" / "architecture.md").read_text()
    assert "- **variant**:" in glossary and "`{variant}` wildcard" in glossary


def test_each_rule_calls_the_entry_module_named_after_it():
    rules = "\n".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    entries = re.findall(r'job_code\("([\w.]+)"\)', rules)
    scripts = {p.stem for p in (REPO / "workflow" / "scripts").glob("*.py")}
    assert {entry.rsplit(".", 1)[1] for entry in entries} == scripts
    for entry in entries:
        script = (REPO / "workflow" / "scripts" / f"{entry.rsplit('.', 1)[1]}.py").read_text()
        assert f"from peftcode.{entry} import" in script, entry


def test_the_tests_mirror_the_package_and_share_helpers_not_each_other():
    tests = REPO / "tests"
    folders = {p.name for p in tests.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert set(LAYER) <= folders
    for path in tests.rglob("test_*.py"):
        if path.name == "test_house.py":
            continue
        text = path.read_text()
        assert "tests.conftest" not in text, path
        assert not re.search(r"from tests(\.\w+)*\.test_\w+ import|import tests(\.\w+)*\.test_", text), path


def test_what_runs_in_vllms_environment_imports_only_the_standard_library_and_vllm():
    """vLLM's environment holds vLLM and none of the project's libraries (envs/vllm.yaml, make vllm)."""
    import sys

    for module, allowed in (
        ("inference/vllm_worker.py", {"vllm", "torch"}),
        ("inference/vllm_engine.py", set()),
    ):
        tree = ast.parse((PACKAGE / module).read_text())
        imported = {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        imported |= {
            node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
        }
        outside = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
        assert {name.split(".")[0] for name in outside} <= allowed | {"__future__"}, (module, outside)
