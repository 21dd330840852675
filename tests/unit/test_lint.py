"""The code stays lint-clean (ruff: pyflakes, pycodestyle, bugbear, pyupgrade; see
pyproject.toml): unused imports, undefined names and likely bugs fail the suite."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, "check", "switch", "media", "bench", "tests"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# Strict mypy over all of our code (issue 8): switch/ and media/. Third-party modules
# without types are read as Any (--ignore-missing-imports).
STRICT = ["switch", "media"]


def test_mypy_strict_is_clean():
    mypy = shutil.which("mypy") or str(Path(sys.executable).parent / "mypy")
    result = subprocess.run([mypy, "--strict", "--ignore-missing-imports", "--follow-imports=silent", *STRICT], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
