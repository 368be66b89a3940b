from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from peftcode.models.publish import publish

publish(
    snakemake.input.checkpoint,
    snakemake.params.repo,
    snakemake.input.metrics,
    snakemake.output[0],
    private=snakemake.params.private,
)
