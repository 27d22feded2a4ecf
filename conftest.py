"""Root conftest: applies to tests/ and to notebooks/ (nbval), also when pytest is given only
notebook paths (tests/conftest.py is then not loaded)."""
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def pytest_configure(config):
    """Tests (and the notebook kernels nbval starts) write their records to a temporary
    outputs/ so the versioned one stays clean."""
    if "AIOS_OUTPUTS" not in os.environ:
        os.environ["AIOS_OUTPUTS"] = tempfile.mkdtemp(prefix="aios-test-outputs-")
    os.environ.setdefault("AIOS_ROOT", str(ROOT))
