from pathlib import Path

from peftcode.devices import claim_gpus

# Before torch initializes CUDA, which reads the devices it may use once.
claim_gpus(snakemake.resources.gpu)  # noqa: F821

from peftcode.infer import infer  # noqa: E402

infer(
    model_dir=snakemake.input.model,  # noqa: F821
    adapter_dir=snakemake.input.get("adapter"),  # noqa: F821
    data_dir=Path(snakemake.input.test).parent,  # noqa: F821
    out_path=snakemake.output.generations,  # noqa: F821
    memory_path=snakemake.output.memory,  # noqa: F821
    settings=snakemake.params.settings,  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
    gpus=snakemake.resources.gpu,  # noqa: F821
    gpu_memory_gb=snakemake.config["resources"].get("gpu_memory_gb"),  # noqa: F821
    embeddings_path=snakemake.input.get("embeddings"),  # noqa: F821
)
