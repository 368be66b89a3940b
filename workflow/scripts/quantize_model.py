from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from peftcode.hardware.devices import claim_gpus

# Before torch initializes CUDA, which reads the devices it may use once.
claim_gpus(snakemake.resources.gpu)

from peftcode.models.quantize_model import quantize_model

quantize_model(
    model_dir=snakemake.input[0],
    out_dir=snakemake.output[0],
    family=snakemake.params.family,
    quantization=snakemake.params.quantization,
    precision=snakemake.params.precision,
)
