from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from peftcode.models.prepare_model import prepare_model
from peftcode.study.settings import ModelSettings

prepare_model(ModelSettings.from_dict(snakemake.params.settings), snakemake.output[0])
