from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from peftcode.planning.plan import write_plan

write_plan(snakemake.params.rows, snakemake.output[0])
