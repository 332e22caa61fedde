"""Where the tests' reference material lies: ``tests/fixtures/`` inside the repository (see its README)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
