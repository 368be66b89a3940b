"""Datasets in one schema, their splits, prompts and training examples, and the retriever's embeddings."""
