"""The shared interface contract (SPEC §4), walked end to end by ../shared/contract_check.py.

It runs once (not per backend): the script builds its own instance with SQLite and drives
the installed ``randomizer`` command and its HTTP API.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = Path(__file__).resolve().parents[2] / "shared" / "contract_check.py"


@pytest.mark.skipif(not CHECK.exists(), reason=f"the contract script {CHECK} is not present")
def test_the_interface_contract_holds_end_to_end():
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("RANDOMIZER_")}
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [sys.executable, str(CHECK)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, (result.stdout[-4000:], result.stderr[-2000:])
    assert "contract check: all" in result.stdout
