from peftcode.logs import log_to

log_to(snakemake.log[0])

from peftcode.adapters import fetch_adapter

fetch_adapter(snakemake.params.source, snakemake.output[0])
