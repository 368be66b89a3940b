from peftcode.logs import log_to

log_to(snakemake.log[0])

from peftcode.models import prepare_model
from peftcode.settings import ModelSettings

prepare_model(ModelSettings.from_dict(snakemake.params.settings), snakemake.output[0])
