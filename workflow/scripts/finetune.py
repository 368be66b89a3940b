from pathlib import Path

from peftcode.devices import claim_gpus

# Before torch initializes CUDA, which reads the devices it may use once.
claim_gpus(snakemake.resources.gpu)  # noqa: F821

from peftcode.finetune import finetune  # noqa: E402

finetune(
    model_dir=snakemake.input.model,  # noqa: F821
    data_dir=Path(snakemake.input.train).parent,  # noqa: F821
    out_dir=snakemake.output.checkpoint,  # noqa: F821
    log_path=snakemake.output.log,  # noqa: F821
    memory_path=snakemake.output.memory,  # noqa: F821
    settings=snakemake.params.settings,  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
    gpus=snakemake.resources.gpu,  # noqa: F821
    gpu_memory_gb=snakemake.config["resources"].get("gpu_memory_gb"),  # noqa: F821
    resume_dir=snakemake.params.resume,  # noqa: F821
)
