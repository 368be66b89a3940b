"""Source formats that take more than a column mapping: APPS' JSON-encoded columns (a ``preset``), and
the Python-only filter for CodeAlpaca-style data that mixes languages (``python_only``)."""

from __future__ import annotations

import ast
import json
import re
import textwrap

from peftcode.sandbox.tests_column import io_tests

# Named in an instruction, these say the example is not about Python (CodeAlpaca-20k mixes languages).
OTHER_LANGUAGES = re.compile(
    r"\b(java|javascript|typescript|node\.?js|c\+\+|c#|sql|mysql|html|css|ruby|php|swift|kotlin|rust|"
    r"bash|shell|perl|scala|haskell|matlab|react|angular|jquery)\b|\bc\b(?= (code|program|function))",
    re.IGNORECASE,
)


def is_python_example(intent: str, code: str) -> bool:
    """The Python-only filter for CodeAlpaca-style data: the code parses as Python and does something
    (more than a bare word or literal, which is how a one-word prose answer parses), and neither text
    names another language."""
    if OTHER_LANGUAGES.search(intent) or OTHER_LANGUAGES.search(code):
        return False
    try:
        body = ast.parse(textwrap.dedent(code)).body
    except (SyntaxError, ValueError):
        return False
    bare = (ast.Name, ast.Constant)
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, bare)) for node in body)


def apps_columns(row: dict) -> dict | None:
    """APPS' JSON-encoded columns as plain ones: ``solution`` (the first reference solution) and
    ``test_cases`` (its input/output pairs as sandbox tests); None for a row whose JSON does not parse."""
    try:
        solutions = json.loads(row["solutions"]) if row["solutions"] else []
        cases = json.loads(row["input_output"]) if row["input_output"] else {}
    except (json.JSONDecodeError, TypeError):
        return None
    pairs = list(zip(cases.get("inputs", []), cases.get("outputs", []), strict=False))
    tests = io_tests(pairs, cases.get("fn_name")) if pairs else None
    return {**row, "solution": solutions[0] if solutions else None, "test_cases": tests}


# A preset turns a dataset's raw columns (the first list) into more columns (the second) before mapping.
PRESETS = {"apps": (["solutions", "input_output"], ["solution", "test_cases"], apps_columns)}
