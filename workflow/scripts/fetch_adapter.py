from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from peftcode.models.fetch_adapter import fetch_adapter

fetch_adapter(snakemake.params.source, snakemake.output[0])
