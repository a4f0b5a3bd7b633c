"""`python -m tests.hostile_corpus OUT_DIR`: write the corpus to a folder (see cli.py)."""

from tests.hostile_corpus.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
