from peftcode.planner import write_plan

write_plan(snakemake.params.rows, snakemake.output[0])  # noqa: F821
