from peftcode.aggregate import aggregate

aggregate(snakemake.input, snakemake.output.table, snakemake.output.csv)  # noqa: F821
