from peftcode.jobs.logs import log_to

log_to(snakemake.log[0])

from pathlib import Path

from peftcode.report.report import write_reports

fine_tunes = [
    {**tune, "log": log}
    for tune, log in zip(snakemake.params.fine_tunes, snakemake.input.train_logs, strict=True)
]
write_reports(
    snakemake.input.table,
    Path(snakemake.output.rq1).parent,
    snakemake.params.expected,
    snakemake.input.plan,
    fine_tunes,
)
