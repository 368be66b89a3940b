from peftcode.models import prepare_model

prepare_model(snakemake.params.settings, snakemake.output[0])  # noqa: F821
