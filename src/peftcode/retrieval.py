"""Dense retrieval for retrieval-augmented prompts, as the study's revision did it: a sentence encoder's
embeddings of the training and test intents (GTE-small there), and for each test intent the training
examples of highest cosine similarity, found by exact search (a few thousand vectors need no index).

The embeddings of a dataset are computed once, by a job of their own, and kept as a file target that
every RAG cell with that encoder reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from peftcode.splits import read_split


def embed_dataset(data_dir: str | Path, encoder: str, out_path: str | Path, batch_size: int = 64) -> None:
    """Write the unit-length embeddings of a prepared dataset's training and test intents (``train`` and
    ``test`` arrays of an ``.npz``)."""
    from sentence_transformers import SentenceTransformer

    # A hub encoder may be pinned as ID@COMMIT (see peftcode.pins); a local directory is taken as it is.
    name, revision = encoder, None
    if not Path(encoder).is_dir():
        name, _, revision = encoder.partition("@")
    model = SentenceTransformer(name, device="cpu", revision=revision or None)
    arrays = {}
    for split in ("train", "test"):
        intents = list(read_split(data_dir, split)["intent"])
        arrays[split] = model.encode(
            intents,
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32)
    np.savez(out_path, **arrays)


def nearest(embeddings_path: str | Path, count: int) -> list[list[int]]:
    """For each test intent, the indices of the ``count`` training intents of highest cosine similarity,
    most similar first (ties by training order)."""
    embeddings = np.load(embeddings_path)
    similarity = embeddings["test"] @ embeddings["train"].T
    order = np.argsort(-similarity, axis=1, kind="stable")
    return order[:, :count].tolist()
