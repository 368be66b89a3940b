from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from peftcode.report.partial_report import partial_reports

partial_reports(snakemake.params.metrics, snakemake.params.expected, snakemake.output[0])
