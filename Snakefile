# peftcode: a PEFT study of code LLMs for Python code generation (Weyssow et al.), as a Snakemake DAG.
# The grid comes from the config alone (see src/peftcode/config.py); rules live in workflow/rules/.
from pathlib import Path

from snakemake.utils import min_version

from peftcode.config import Study, validate_config

min_version("9.0")


# The embedded default study, unless a study is named with --configfile (which then stands alone).
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


validate_config(config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml")
study = Study(config)
R = study.results


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/infer.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.report.output,
