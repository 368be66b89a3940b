"""The version of a job's code: a hash of the peftcode modules (and files) it runs.

Snakemake reruns a job when its params change, but of the code it notices only the rule's own script. Each
rule puts ``code_version`` of its module in its params, so that an edit to any module the job runs, however
indirectly, reruns its jobs and theirs downstream, and an edit elsewhere does not.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
# Files a module reads at run time rather than importing.
READS = {
    "sandbox": ("sandbox_guard.py", "sandbox_stage.py", "sandbox_serve.py", "wire.py"),
    "verdicts": ("judge.py", "wire.py", "programs.py"),
    "report": ("paper_claims.yaml",),
}


def local_imports(module: str, package: Path = PACKAGE) -> set[str]:
    """The peftcode modules that ``module`` imports directly."""
    tree = ast.parse((package / f"{module}.py").read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name.split(".")[1] for name in names if name.startswith("peftcode.")}


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
def code_version(module: str, package: Path = PACKAGE) -> str:
    """A hash of ``module``, every peftcode module it imports (transitively) and the files they read."""
    seen = module_closure(module, package)
    files = sorted({f"{name}.py" for name in seen} | {f for name in seen for f in READS.get(name, ())})
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.encode() + b"\0" + (package / file).read_bytes())
    return digest.hexdigest()[:16]
