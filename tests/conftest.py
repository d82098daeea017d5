"""Shared fixtures."""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # ARIMA fits thrash with BLAS threads on 2 cores

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only reference data: ``<repo parent>/shared/data`` (CI clones the repo beside a
    copy of ``shared/``), else ``/work/shared/data``; skips the test when neither exists."""
    for path in (Path(__file__).resolve().parents[2] / "shared" / "data", Path("/work/shared/data")):
        if path.is_dir():
            return path
    pytest.skip("shared reference data (shared/data) not found")
