from peftcode.logs import log_to

log_to(snakemake.log[0])

from pathlib import Path

from peftcode.data import prepare_data

prepare_data(snakemake.params.settings, Path(snakemake.output.stats).parent)
