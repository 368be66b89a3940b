"""A job's code version changes with the modules it runs, and only with them."""

import shutil

from peftcode.versions import PACKAGE, code_version, local_imports


def test_dependencies_are_found_transitively():
    assert {"data", "finetune", "models", "memory", "prompts"} <= local_imports("infer")
    assert "report" not in local_imports("infer")


def test_editing_a_module_changes_the_versions_of_the_jobs_that_run_it(tmp_path):
    package = tmp_path / "peftcode"
    shutil.copytree(PACKAGE, package, ignore=shutil.ignore_patterns("__pycache__"))
    before = {job: code_version(job, package) for job in ("finetune", "infer", "metrics", "report")}
    # models.py is run by fine-tuning and inference (through finetune.py), not by evaluation or reports.
    models = package / "models.py"
    models.write_text(models.read_text() + "\n# an edit\n")
    code_version.cache_clear()
    after = {job: code_version(job, package) for job in before}
    assert [job for job in before if before[job] != after[job]] == ["finetune", "infer"]
    # The sandbox's guard is a script it runs, not an import: an edit to it still counts.
    guard = package / "sandbox_guard.py"
    guard.write_text(guard.read_text() + "\n# an edit\n")
    code_version.cache_clear()
    assert code_version("metrics", package) != after["metrics"]
