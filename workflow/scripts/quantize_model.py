from peftcode.devices import claim_gpus

# Before torch initializes CUDA, which reads the devices it may use once.
claim_gpus(snakemake.resources.gpu)  # noqa: F821

from peftcode.models import quantize_model  # noqa: E402

quantize_model(
    model_dir=snakemake.input[0],  # noqa: F821
    out_dir=snakemake.output[0],  # noqa: F821
    family=snakemake.params.family,  # noqa: F821
    quantization=snakemake.params.quantization,  # noqa: F821
    precision=snakemake.params.precision,  # noqa: F821
)
