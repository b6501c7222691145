"""Decoded windows → output rows: the Annotator (loaded once, used by batch, Serve and local
runs), the merge of windows into one row per file, prompts and parsers, the failure policy."""
