"""bench/ on sys.path: the posteriordb densities (bench/posteriordb_models.py) are a benchmark and test
fixture, not part of the installed library."""

import sys
from pathlib import Path

BENCH = str(Path(__file__).resolve().parents[2] / "bench")
if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
