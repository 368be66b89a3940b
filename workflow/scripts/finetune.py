from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from pathlib import Path

from peftcode.hardware.devices import claim_gpus, job_compute
from peftcode.jobs.startup import import_only_what_is_used
from peftcode.study.settings import TrainSettings

# Before torch initializes CUDA, which reads the devices it may use once.
claim_gpus(snakemake.resources.gpu)
settings = TrainSettings.from_dict(snakemake.params.settings)
import_only_what_is_used(settings)

from peftcode.jobs.tracking import job_run
from peftcode.training.finetune import finetune

with job_run(snakemake, "finetune") as run:
    record = finetune(
        model_dir=snakemake.input.model,
        data_dir=Path(snakemake.input.train).parent,
        out_dir=snakemake.output.checkpoint,
        log_path=snakemake.output.log,
        cost_path=snakemake.output.cost,
        settings=settings,
        **job_compute(snakemake),
        resume_dir=snakemake.params.resume,
        on_log_row=run.log_step,
    )
    run.log_record(record, "finetune/")
    run.log_reference("checkpoint", snakemake.output.checkpoint)
