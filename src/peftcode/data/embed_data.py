"""A dataset's intents embedded by a sentence encoder (the ``embed_data`` rule), for dense retrieval
(:mod:`peftcode.data.retrieval`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from peftcode.data.splits import read_split


def embed_dataset(data_dir: str | Path, encoder: str, out_path: str | Path, batch_size: int = 64) -> None:
    """Write the unit-length embeddings of a prepared dataset's training and test intents (``train`` and
    ``test`` arrays of an ``.npz``)."""
    from sentence_transformers import SentenceTransformer

    # A hub encoder may be pinned as ID@COMMIT (see peftcode.study.pins); a local directory is taken as it is.
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
