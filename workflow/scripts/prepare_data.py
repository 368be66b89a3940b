from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from pathlib import Path

from peftcode.data.prepare_data import prepare_data
from peftcode.study.settings import DataSettings

prepare_data(DataSettings.from_dict(snakemake.params.settings), Path(snakemake.output.stats).parent)
