"""earmark: annotate large audio archives with audio-language models on Ray."""

__version__ = "0.2.0"
