"""Publishing a fine-tune to a hub: its checkpoint (see :mod:`peftcode.models.export`), its model card
completed
with the metrics of every test set it was evaluated on, uploaded to a repository of its own (private unless
the config says otherwise). A rerun with nothing changed uploads nothing: ``huggingface_hub`` skips files
whose content the hub already has, and makes no commit where none changed."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import HfApi, ModelCard

SHOWN = ("em@1", "em@10", "codebleu", "pass@1", "pass@10")


def metrics_lines(rows: list[dict]) -> list[str]:
    """A table of each test set's metrics, with their 95% intervals."""
    lines = ["| test set | metric | value | 95% interval |", "| --- | --- | --- | --- |"]
    for row in sorted(rows, key=lambda r: r["dataset"]):
        for metric in (m for m in SHOWN if row.get(m) is not None):
            low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
            interval = f"[{low:.3f}, {high:.3f}]" if low is not None else ""
            lines.append(f"| {row['dataset']} | {metric} | {row[metric]:.3f} | {interval} |")
    return lines


def publish(
    checkpoint: str | Path, repo_id: str, metrics: list[str | Path], out_path: str | Path, private=True
):
    """Upload ``checkpoint`` to ``repo_id`` with its card and the ``metrics`` files of its evaluations;
    ``out_path`` records the repository and the commit it is at."""
    rows = [json.loads(Path(path).read_text()) for path in metrics]
    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peftcode-publish-") as staging:
        staged = Path(staging) / "checkpoint"
        shutil.copytree(checkpoint, staged)
        card = ModelCard.load(staged / "README.md")
        if rows:
            card.text += "\n## Evaluation\n\n" + "\n".join(metrics_lines(rows)) + "\n"
        card.save(staged / "README.md")
        commit = api.upload_folder(folder_path=staged, repo_id=repo_id, commit_message="peftcode: publish")
    record = {"repo": repo_id, "commit": commit.oid, "url": commit.commit_url, "private": private}
    Path(out_path).write_text(json.dumps(record, indent=2))
    return record
