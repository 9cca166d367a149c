"""Retrieval-augmented generation built in: documents -> chunks -> an exact cosine index -> top-k context."""
