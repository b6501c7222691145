"""Shared fixtures. Unit tests need no Ray; integration fixtures start real local servers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/audio_factory.py and friends

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from earmark.bench import corpus as _bench_corpus  # noqa: E402
from paths import DEMO  # noqa: E402

_bench_corpus.SPEECH_DIR = DEMO  # `earmark bench --speech`, whatever folder pytest runs in


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/integration starts real servers or a Ray: slow by definition."""
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.slow)
