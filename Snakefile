# peftcode: a PEFT study of code LLMs for Python code generation (Weyssow et al.), as a Snakemake DAG.
# The grid comes from the config alone (see src/peftcode/config.py); rules live in workflow/rules/.
import os
import sys
from pathlib import Path

from snakemake.utils import min_version

# peftcode is imported from this checkout, here and in every job (PYTHONPATH outlives conda activation), so
# the code a job runs is the code its params' version hash covers, whatever environment runs it.
SRC = str(Path(workflow.basedir) / "src")
sys.path.insert(0, SRC)
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, (SRC, os.environ.get("PYTHONPATH")))))

min_version("9.0")


# The landing page of `snakemake --report`: the study, its grid, and how to read the research questions.
report: "workflow/report/workflow.rst"


# The embedded default study, unless a study is named with --configfile (which then stands alone).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# A job on a compute node (a cluster job's own snakemake) reads the Hugging Face cache only, its parse of
# this file included: most sites' compute nodes have no network, and the local rules below fetched what the
# jobs read. Set before anything imports huggingface_hub, which reads it once.
ONLINE_COMPUTE_NODES = config.get("resources", {}).get("online_compute_nodes", False)
if workflow.remote_exec and not ONLINE_COMPUTE_NODES:
    os.environ.update(HF_HUB_OFFLINE="1")

from peftcode.models.adapters import check_bases  # noqa: E402
from peftcode.study.config import Study  # noqa: E402
from peftcode.study.validation import validate_config  # noqa: E402
from peftcode.planning.plan import Plan  # noqa: E402
from peftcode.jobs.preemption import remove_finished  # noqa: E402

validate_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
# Every cell's memory and compute, estimated before any job runs; cells over the GPUs' budget stop the run
# here, or stay out of the grid with over_budget: skip.
plan = Plan(Study(config))
study = Study(config, left_out=plan.left_out(config["over_budget"]))
# An evaluated adapter whose base is not its cell's model stops the run here.
check_bases(study)
print(plan.summary(), file=sys.stderr)
R = study.results


# Cheap rules run where snakemake runs, not as cluster jobs.
localrules:
    join_data,
    plan,
    aggregate,
    report,
    partial_report,
    # It finds an interpreter on the shared file system.
    vllm_engine,
    # They need the network, which compute nodes may not have.
    fetch_adapter,
    publish,


if not ONLINE_COMPUTE_NODES:

    # They fetch from the hub, which compute nodes may not reach.
    localrules:
        prepare_model,
        prepare_data,
        embed_data,


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/publish.smk"


# Finished model jobs keep what a retry would resume from until the run has succeeded (see
# peftcode.jobs.preemption: SLURM marks a job that ends past its time limit TIMEOUT).
onsuccess:
    remove_finished(f"{R}/resume")


rule all:
    default_target: True
    input:
        rules.report.output,
        rules.plan.output,
        [f"{R}/published/{c.model}/{c.variant}/{c.dataset}.json" for c in PUBLISHED],
