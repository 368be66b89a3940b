"""Dense retrieval with a tiny sentence encoder built from a config: the nearest training example of a
test intent that repeats one is that example, and RAG prompts put the most similar example last."""

import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel

from peftcode.data.embed_data import embed_dataset
from peftcode.data.prepare_data import prepare_data
from peftcode.data.prompts import causal_prompt, inference_prompts
from peftcode.data.retrieval import nearest
from peftcode.study.settings import DataSettings


@pytest.fixture(scope="module")
def encoder(tmp_path_factory, tokenizer):
    """A 2-layer BERT with mean pooling, saved as a sentence-transformers model."""
    from sentence_transformers import SentenceTransformer, models

    folder = tmp_path_factory.mktemp("encoder")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id or 0,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder / "bert")
    tokenizer.save_pretrained(folder / "bert")
    transformer = models.Transformer(str(folder / "bert"), max_seq_length=64)
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="mean")
    SentenceTransformer(modules=[transformer, pooling], device="cpu").save(str(folder / "st"))
    return str(folder / "st")


def test_the_nearest_training_example_is_the_one_a_test_intent_repeats(encoder, tmp_path):
    train = [
        {"nl": "sort the list `l` in place", "cmd": "l.sort()"},
        {"nl": "open the file `f` for reading", "cmd": "open(f)"},
        {"nl": "reverse the string `s`", "cmd": "s[::-1]"},
        {"nl": "sum every number in `a`", "cmd": "sum(a)"},
    ]
    test = [
        {"nl": "reverse the string `s`", "cmd": "s[::-1]"},
        {"nl": "sum every number in `a`", "cmd": "sum(a)"},
    ]
    source = tmp_path / "source"
    source.mkdir()
    for split, rows in (("train", train), ("validation", train), ("test", test)):
        pd.DataFrame(rows).to_json(source / f"{split}.jsonl", orient="records", lines=True)
    settings = {"source": {"path": str(source)}, "format": "jsonl", "fields": {"intent": "nl", "code": "cmd"},
                "splits": {"train": "train", "validation": "validation", "test": "test"}}  # fmt: skip
    prepare_data(DataSettings(**settings), tmp_path / "data")
    embed_dataset(tmp_path / "data", encoder, tmp_path / "embeddings.npz")
    ranked = nearest(tmp_path / "embeddings.npz", 2)
    assert [row[0] for row in ranked] == [2, 3]
    data = tmp_path / "data"
    prompts = inference_prompts(
        pd.read_parquet(data / "test.parquet"), pd.read_parquet(data / "train.parquet"), "causal",
        shots=2, retriever="dense", similar=ranked,
    )  # fmt: skip
    second = train[ranked[0][1]]
    expected = [(second["nl"], second["cmd"]), ("reverse the string `s`", "s[::-1]")]
    assert prompts[0] == causal_prompt("reverse the string `s`", expected)  # the most similar last
