"""Where things are, for tests (importable from every test folder)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"
