"""Evaluation data: datasets read and validated record by record, and prompt templates."""
