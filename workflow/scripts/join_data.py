from pathlib import Path

from peftcode.data import join_datasets

join_datasets(snakemake.params.members, Path(snakemake.output.stats).parent)  # noqa: F821
