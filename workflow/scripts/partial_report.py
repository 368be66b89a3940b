from peftcode.aggregate import partial_reports

partial_reports(snakemake.params.metrics, snakemake.params.expected, snakemake.output[0])  # noqa: F821
