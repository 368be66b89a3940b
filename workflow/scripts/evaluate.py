from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from peftcode.evaluation.evaluate import evaluate
from peftcode.jobs.tracking import job_run
from peftcode.study.settings import EvalSettings

with job_run(snakemake, "evaluate") as run:
    row = evaluate(
        generations_path=snakemake.input.generations,
        out_path=snakemake.output[0],
        cell=snakemake.params.cell,
        settings=EvalSettings.from_dict(snakemake.params.settings),
        infer_cost_path=snakemake.input.infer_cost,
        finetune_cost_path=snakemake.input.get("finetune_cost"),
        workers=snakemake.threads,
        test_path=snakemake.input.test,
    )
    run.log_record(row, "")
