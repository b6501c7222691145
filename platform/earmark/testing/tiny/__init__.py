"""Tiny offline checkpoints of the remote-code families, for tests and benchmarks.

`build_tiny_checkpoint("eureka" | "midashenglm", path)` writes a directory that loads through
the production path (`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`):
config.json with `auto_map`, the stand-in modeling/configuration files of this package,
random weights (fixed seed), a small BPE tokenizer with the family's special tokens, a chat
template and, for eureka, `mel_filters.npz`; for midashenglm, the processor files vLLM's own
MiDashengLM loads too (tests/unit/test_midashenglm_vllm_parity.py). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

TINY_FAMILIES = ("eureka", "midashenglm", "moss")


def build_tiny_checkpoint(family: str, path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny random checkpoint of `family` into `path` (created) and return it."""
    from earmark.testing.tiny import builders

    if family == "eureka":
        return builders.build_eureka(Path(path), seed=seed)
    if family == "midashenglm":
        return builders.build_midashenglm(Path(path), seed=seed)
    if family == "moss":
        from earmark.testing.tiny_moss import build_tiny_moss

        return Path(build_tiny_moss(Path(path)))
    raise ValueError(f"no tiny checkpoint for family {family!r}; known: {', '.join(TINY_FAMILIES)}")
