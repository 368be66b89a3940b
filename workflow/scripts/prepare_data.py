from pathlib import Path

from peftcode.data import prepare_data

prepare_data(snakemake.params.settings, Path(snakemake.output.stats).parent)  # noqa: F821
