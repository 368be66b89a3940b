from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from pathlib import Path

from peftcode.data.embed_data import embed_dataset

embed_dataset(Path(snakemake.input.train).parent, snakemake.params.encoder, snakemake.output[0])
