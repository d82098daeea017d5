"""Wall time of the default ``python evaluate.py`` run (target: within 5 minutes on 2 cores).

    python bench/bench_evaluate.py [key=value ...]     # extra evaluate.py overrides
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    args = ["out=results/bench_evaluate", *sys.argv[1:]]
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args], check=True, cwd=ROOT)
    print(f"default evaluate.py run: {time.perf_counter() - start:.1f} s wall")


if __name__ == "__main__":
    main()
