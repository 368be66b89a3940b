from pathlib import Path

from peftcode.report import write_reports

write_reports(snakemake.input[0], Path(snakemake.output.rq1).parent, snakemake.params.expected)  # noqa: F821
