"""The version of a job's code: a hash of the peftcode modules (and files) it runs.

Snakemake reruns a job when its params change, but of the code it notices only the rule's own script. Each
rule puts ``code_version`` of its module in its params, so that an edit to any module the job runs, however
indirectly, reruns its jobs and theirs downstream, and an edit elsewhere does not. A Python file is hashed
by its syntax tree without docstrings, so that a comment, a docstring or a reformatting reruns nothing.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
# Files a module reads at run time rather than importing.
READS = {
    "sandbox.namespaces": tuple(
        f"sandbox/{name}.py" for name in ("guard", "stage", "serve", "peer", "wire", "rebuild", "layouts")
    ),
    "sandbox.verdicts": tuple(
        f"sandbox/{name}.py" for name in ("judge", "peer", "wire", "rebuild", "layouts", "tests_column")
    ),
    "report.claims": ("report/paper_claims.yaml",),
    "inference.vllm_decoding": ("inference/vllm_worker.py",),
}


def module_file(module: str, package: Path = PACKAGE) -> Path:
    """A module's file: ``report.rq1`` is ``report/rq1.py``, the package ``report`` its ``__init__.py``."""
    path = package.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def local_imports(module: str, package: Path = PACKAGE) -> set[str]:
    """The peftcode modules that ``module`` imports directly (``report.rq1`` for a module of a package)."""
    tree = ast.parse(module_file(module, package).read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            # ``from peftcode.report import rq1`` imports a module, not a name of one.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    found = {name.removeprefix("peftcode.") for name in names if name.startswith("peftcode.")}
    return {name for name in found if module_file(name, package).exists()}


def module_closure(module: str, package: Path = PACKAGE) -> set[str]:
    """``module`` and every peftcode module it imports, transitively."""
    seen, pending = set(), [module]
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            pending.extend(local_imports(name, package))
    return seen


@cache
def code_version(module: str, package: Path = PACKAGE, script: Path | None = None) -> str:
    """A hash of ``module``, every peftcode module it imports (transitively) and the files they read; with
    ``script``, of the job's script too (``workflow/scripts/NAME.py``)."""
    seen = module_closure(module, package)
    files = {str(module_file(name, package).relative_to(package)) for name in seen}
    files |= {file for name in seen for file in READS.get(name, ())}
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(file.encode() + b"\0" + what_it_does(package / file))
    if script is not None:
        digest.update(b"script\0" + what_it_does(Path(script)))
    return digest.hexdigest()[:16]


def what_it_does(path: Path) -> bytes:
    """A file's content as far as running it goes: a Python file's syntax tree without its docstrings (no
    comments, layout or line numbers), any other file's bytes."""
    if path.suffix != ".py":
        return path.read_bytes()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()
