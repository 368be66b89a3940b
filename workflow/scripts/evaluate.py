from peftcode.metrics import evaluate

evaluate(
    generations_path=snakemake.input.generations,  # noqa: F821
    out_path=snakemake.output[0],  # noqa: F821
    cell=snakemake.params.cell,  # noqa: F821
    settings=snakemake.params.settings,  # noqa: F821
    infer_memory_path=snakemake.input.infer_memory,  # noqa: F821
    finetune_memory_path=snakemake.input.get("finetune_memory"),  # noqa: F821
    workers=snakemake.threads,  # noqa: F821
)
