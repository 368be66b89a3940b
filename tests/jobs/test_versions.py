"""A job's code version changes with what the modules it runs do, and only with them: module by module,
which jobs an edit reruns; and nothing for a comment, a docstring or a reformatting."""

import shutil
from pathlib import Path

import pytest

from peftcode.jobs import versions
from peftcode.jobs.versions import PACKAGE, code_version, local_imports

# Each rule's code version is that of its entry module (named after the rule) and what it imports (see
# workflow/rules/common.smk).
ENTRIES = (
    "data.prepare_data",
    "data.join_data",
    "data.embed_data",
    "models.prepare_model",
    "models.quantize_model",
    "models.fetch_adapter",
    "training.finetune",
    "inference.infer",
    "evaluation.evaluate",
    "report.aggregate",
    "planning.plan",
    "report.report",
    "report.partial_report",
    "models.publish",
)
JOBS = {entry.rsplit(".", 1)[1]: entry for entry in ENTRIES}
# What an edit to a module reruns: the jobs whose code runs it (downstream jobs rerun through the DAG).
RERUNS = {
    "sandbox.runner": {"evaluate"},  # the sandbox harness: evaluation alone
    "sandbox.judge": {"evaluate"},
    # The two sides of a tested run, files the sandbox and the judge run.
    "sandbox.peer": {"evaluate"},
    "sandbox.wire": {"evaluate"},
    "sandbox.layouts": {"evaluate"},
    "sandbox.rebuild": {"evaluate"},
    "sandbox.verdicts": {"evaluate"},
    "training.finetune": {"finetune"},  # the training loop: no inference of its own
    "training.peft_setup": {"finetune"},
    "inference.infer": {"infer"},
    "inference.beam_search": {"infer"},
    "inference.stops": {"infer"},
    "inference.resume_store": {"infer"},  # an inference's finished examples, kept for a rerun
    "models.probe": {"finetune", "infer"},  # written by the fine-tune, checked by inference
    "data.prompts": {"finetune", "infer", "fetch_adapter"},
    "data.retrieval": {"infer"},
    "data.embed_data": {"embed_data"},
    # The plan counts the local datasets' rows with the reader.
    "data.prepare_data": {"prepare_data", "plan"},
    "data.join_data": {"join_data"},
    "data.presets": {"prepare_data", "plan"},
    "data.splits": {"prepare_data", "join_data", "embed_data", "finetune", "infer", "plan"},
    # The tests' format, which prepare_data writes and the judge reads.
    "sandbox.tests_column": {"prepare_data", "evaluate", "plan"},
    "models.quantize_model": {"quantize_model"},
    "planning.estimates": {"plan"},
    "report.rq1": {"report", "partial_report"},
    "report.aggregate": {"aggregate", "partial_report"},
    "evaluation.stats": {"evaluate", "report", "partial_report"},
}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """A copy of the package to edit, and each job's version before any edit. Its files are parsed once for
    every version of them (keyed by their text): an edit makes the next versions parse the edited file alone,
    not every module of every job again."""
    package = tmp_path_factory.mktemp("versions") / "peftcode"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__", "*.json"))
    with pytest.MonkeyPatch.context() as patch:
        for name in ("local_imports", "what_it_does"):
            patch.setattr(versions, name, by_text(getattr(versions, name)))
        code_version.cache_clear()
        yield package, {job: code_version(module, package) for job, module in JOBS.items()}
    code_version.cache_clear()


def by_text(parse):
    """``parse`` remembered for each text of the file it parses."""
    remembered = {}

    def parsed(*args):
        path = args[0] if isinstance(args[0], Path) else versions.module_file(*args)
        key = (args, path.read_bytes())
        if key not in remembered:
            remembered[key] = parse(*args)
        return remembered[key]

    return parsed


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
    found = local_imports("inference.infer")
    assert {"data.splits", "models.checkpoints", "hardware.memory", "data.prompts", "models.probe"} <= found
    assert "training.finetune" not in found and "report.report" not in found


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
    assert edited_versions(package, "sandbox.guard", "\nEDITED = True\n") == {"evaluate"}
