"""earmark: annotate large audio archives with audio-language models on Ray."""

__version__ = "0.1.0"
