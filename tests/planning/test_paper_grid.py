"""The paper's grid: every cell planned, checked against the study's 24 GB budget and listed as jobs,
without the network, from an empty Hugging Face cache (the models' config.json shapes ship with the
package)."""

import pytest

from tests.helpers import REPO
from tests.study_runs import job_counts, snakemake

PAPER = REPO / "studies" / "paper.yaml"


def offline_hub(folder) -> dict[str, str]:
    """The environment of a process with an empty Hugging Face cache and no hub, as on a fresh clone."""
    return {"HF_HOME": str(folder), "HF_HUB_OFFLINE": "1"}


def test_paper_grid_dry_run_lists_every_cell_that_fits_in_24_gb(tmp_path):
    env = offline_hub(tmp_path)
    result = snakemake(PAPER, "--dry-run", "--quiet", "rules", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = next(line for line in result.stderr.splitlines() if line.startswith("Memory plan"))
    assert summary.startswith("Memory plan at 24 GB per GPU: ") and "GPU-hours" in summary
    fitting, total = (int(n) for n in summary.split(": ")[1].split(" cells fit")[0].split(" of "))
    assert 0 < fitting < total == 327  # the grid's cells; CodeLlama-13B and 34B in fp16 do not all fit
    counts = job_counts(result)
    assert counts["evaluate"] == counts["infer"] == fitting
    assert counts["plan"] == counts["report"] == counts["aggregate"] == counts["join_data"] == 1
    assert counts["embed_data"] == 2  # the dense retriever's embeddings, once per dataset
    # Left out at 24 GB: everything of CodeLlama-13B-Python (its fp16 weights alone are 26 GB), and APPS
    # (its one method, LoRA on 1024-token examples, needs over 40 GB even on CodeLlama-7B).
    assert counts["prepare_data"] == 2 and counts["prepare_model"] == 11


@pytest.mark.slow(minutes=0.7)  # PEFT's layers built on every model of the grid, from a cold cache
def test_the_modern_grid_plans_offline_with_todays_methods_as_methods_of_their_own(tmp_path):
    result = snakemake(
        REPO / "studies" / "modern.yaml", "--dry-run", "--quiet", "rules", env=offline_hub(tmp_path)
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    summary = next(line for line in result.stderr.splitlines() if line.startswith("Memory plan"))
    assert summary.startswith("Memory plan at 24 GB per GPU: 322 of 429 cells fit"), summary
    counts = job_counts(result)
    # 11 models x 9 methods x 2 training sets, less the fine-tunes that do not fit in 24 GB.
    assert counts["prepare_model"] == 11 and counts["finetune"] == 150 and counts["quantize_model"] == 11
