"""The wheel holds every module: each package folder is listed in pyproject.toml, schemas ship as data."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_folder_is_listed_for_the_wheel():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    listed = set(config["packages"])
    found = set()
    for top, folder in mapping.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([top, *rel.parts]) if rel.parts else top)
    assert found == listed


def test_built_wheel_contains_modules_and_schemas(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                           "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    [wheel] = tmp_path.glob("tickpipe-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("tickpipe/cli.py", "tickpipe/commands/process.py", "tickpipe/processors/integrity/stage.py",
                   "tickpipe/processors/normalizers/coinbase.py", "tickpipe/producers/loop.py",
                   "tickpipe/emulators/alpaca.py", "tickpipe/schemas/trade.avsc", "tickpipe/schemas/gap_alert.avsc"):
        assert module in names, module
