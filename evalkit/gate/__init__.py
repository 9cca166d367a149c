"""The CI gate: checks and verdicts (``checks``) and their outputs for people and CI systems (``output``)."""
