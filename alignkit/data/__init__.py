"""Preference data: templates, sources, tokenization."""
