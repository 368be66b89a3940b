from peftcode.logs import log_to

log_to(snakemake.log[0])

from peftcode.models import prepare_model

prepare_model(snakemake.params.settings, snakemake.output[0])
