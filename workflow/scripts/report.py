from peftcode.logs import log_to

log_to(snakemake.log[0])

from pathlib import Path

from peftcode.report import write_reports

write_reports(
    snakemake.input.table,
    Path(snakemake.output.rq1).parent,
    snakemake.params.expected,
    snakemake.input.plan,
)
