from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from peftcode.report.aggregate import aggregate

aggregate(snakemake.input, snakemake.output.table, snakemake.output.csv)
