from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from pathlib import Path

from peftcode.data.join_data import join_datasets

join_datasets(snakemake.params.members, Path(snakemake.output.stats).parent)
