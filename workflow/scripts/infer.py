from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

import json
from pathlib import Path

from peftcode.hardware.devices import claim_gpus, job_compute
from peftcode.jobs.startup import import_only_what_is_used
from peftcode.study.settings import InferSettings

# Before torch initializes CUDA, which reads the devices it may use once.
claim_gpus(snakemake.resources.gpu)
settings = InferSettings.from_dict(snakemake.params.settings)
import_only_what_is_used(settings)

from peftcode.inference.infer import infer
from peftcode.jobs.tracking import job_run

vllm = snakemake.input.get("engine")  # vLLM's environment, for a cell it decodes
with job_run(snakemake, "infer") as run:
    infer(
        model_dir=snakemake.input.model,
        adapter_dir=snakemake.input.get("adapter"),
        data_dir=Path(snakemake.input.test).parent,
        out_path=snakemake.output.generations,
        cost_path=snakemake.output.cost,
        settings=settings,
        **job_compute(snakemake),
        embeddings_path=snakemake.input.get("embeddings"),
        resume_dir=snakemake.params.resume,
        vllm_engine=json.loads(Path(snakemake.input.engine).read_text()) if vllm else None,
    )
    run.log_record(json.loads(Path(snakemake.output.cost).read_text()), "infer/")
    run.log_reference("model", snakemake.input.model)
    if snakemake.input.get("adapter"):
        run.log_reference("adapter", snakemake.input.adapter)
    run.log_reference("generations", snakemake.output.generations)
