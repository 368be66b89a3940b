from pathlib import Path

from peftcode.report import write_reports

write_reports(
    snakemake.input.table,  # noqa: F821
    Path(snakemake.output.rq1).parent,  # noqa: F821
    snakemake.params.expected,  # noqa: F821
    snakemake.input.plan,  # noqa: F821
)
