"""A job's code version changes with what the modules it runs do, and only with them: module by module,
which jobs an edit reruns; and nothing for a comment, a docstring or a reformatting."""

import shutil

import pytest

from peftcode.versions import PACKAGE, code_version, local_imports

# Each rule's code version is that of one module and what it imports (see workflow/rules/).
JOBS = {
    "prepare_data": "data",
    "embed_data": "retrieval",
    "prepare_model": "models",
    "fetch_adapter": "adapters",
    "finetune": "finetune",
    "infer": "infer",
    "evaluate": "metrics",
    "aggregate": "aggregate",
    "plan": "planner",
    "report": "report",
    "publish": "publish",
}
# What an edit to a module reruns: the jobs whose code runs it (downstream jobs rerun through the DAG).
RERUNS = {
    "sandbox": {"evaluate"},  # the sandbox harness: evaluation alone
    "judge": {"evaluate"},
    # The two sides of a tested run, files the sandbox and the judge run.
    "peer": {"evaluate"},
    "wire": {"evaluate"},
    "layouts": {"evaluate"},
    "rebuild": {"evaluate"},
    "verdicts": {"evaluate"},
    "finetune": {"finetune"},  # the training loop: no inference of its own
    "methods": {"finetune"},
    "infer": {"infer"},
    "beam_search": {"infer"},
    "stops": {"infer"},
    "progress": {"infer"},  # an inference's finished examples, kept for a rerun
    "probe": {"finetune", "infer"},  # written by the fine-tune, checked by inference
    "prompts": {"finetune", "infer", "fetch_adapter"},
    # The plan counts the local datasets' rows with the reader.
    "data": {"prepare_data", "plan"},
    "presets": {"prepare_data", "plan"},
    "splits": {"prepare_data", "embed_data", "finetune", "infer", "plan"},
    # The tests' format, which prepare_data writes and the judge reads.
    "programs": {"prepare_data", "evaluate", "plan"},
    "estimates": {"plan"},
    "report.rq1": {"report"},
    "aggregate": {"aggregate", "report"},
    "stats": {"evaluate", "report"},
}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A copy of the package to edit, and each job's version before any edit."""
    package = tmp_path_factory.mktemp("versions") / "peftcode"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__", "*.json"))
    code_version.cache_clear()
    return package, {job: code_version(module, package) for job, module in JOBS.items()}


def edited_versions(package, module: str, text: str) -> set[str]:
    """The jobs whose versions ``text`` added to ``module`` changes (the module is restored after)."""
    package, before = package
    path = package.joinpath(*module.split(".")).with_suffix(".py")
    original = path.read_text()
    path.write_text(original + text)
    code_version.cache_clear()
    try:
        return {job for job, name in JOBS.items() if code_version(name, package) != before[job]}
    finally:
        path.write_text(original)
        code_version.cache_clear()


def test_dependencies_are_found_transitively():
    assert {"splits", "models", "memory", "prompts", "probe"} <= local_imports("infer")
    assert "finetune" not in local_imports("infer") and "report" not in local_imports("infer")


@pytest.mark.parametrize(("module", "jobs"), RERUNS.items())
def test_an_edit_to_a_module_reruns_the_jobs_that_run_it_and_no_others(package, module, jobs):
    assert edited_versions(package, module, "\nEDITED = True\n") == jobs


@pytest.mark.parametrize("module", sorted(RERUNS))
def test_a_comment_a_docstring_or_a_reformatting_reruns_nothing(package, module):
    text = '\n# a comment\n\n\ndef documented():\n    """A docstring."""\n    return (1 +\n            2)\n'
    plain = "\n\ndef documented():\n    return 1 + 2\n"
    assert edited_versions(package, module, text) == edited_versions(package, module, plain)
    assert edited_versions(package, module, "\n# only a comment\n") == set()


def test_a_script_the_sandbox_runs_counts_as_its_code(package):
    # The sandbox's guard is a file it runs, not an import: an edit to it still counts.
    assert edited_versions(package, "sandbox_guard", "\nEDITED = True\n") == {"evaluate"}
