from peftcode.models import quantize_model

quantize_model(
    model_dir=snakemake.input[0],  # noqa: F821
    out_dir=snakemake.output[0],  # noqa: F821
    family=snakemake.params.family,  # noqa: F821
    quantization=snakemake.params.quantization,  # noqa: F821
)
