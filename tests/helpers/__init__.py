"""What the tests share besides fixtures: photos, the API test client, our own Redis and stack,
the development set, the hostile corpus, the Procfile's commands."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
