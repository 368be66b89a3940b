"""Dense retrieval for retrieval-augmented prompts, as the study's revision did it: a sentence encoder's
embeddings of the training and test intents (GTE-small there), and for each test intent the training
examples of highest cosine similarity, found by exact search (a few thousand vectors need no index).

The embeddings of a dataset are computed once, by a job of their own (:mod:`peftcode.data.embed_data`), and
kept as a file target that every RAG cell with that encoder reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def nearest(embeddings_path: str | Path, count: int) -> list[list[int]]:
    """For each test intent, the indices of the ``count`` training intents of highest cosine similarity,
    most similar first (ties by training order)."""
    embeddings = np.load(embeddings_path)
    similarity = embeddings["test"] @ embeddings["train"].T
    order = np.argsort(-similarity, axis=1, kind="stable")
    return order[:, :count].tolist()
