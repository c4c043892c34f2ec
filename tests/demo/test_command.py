"""`tickpipe demo` refuses bad arguments at once, naming them, before starting anything."""

from __future__ import annotations

import subprocess

import pytest

from tickpipe.children import tickpipe_command


@pytest.mark.parametrize("args, problem", [
    (["--duration", "0"], "--duration must be positive"),
    (["--rate", "-5"], "--rate must be positive"),
    (["--json", "/nonexistent-dir/summary.json"], "no such directory"),
])
def test_bad_arguments_exit_2_naming_the_problem(args, problem):
    proc = subprocess.run(tickpipe_command("demo", *args), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and problem in proc.stderr and "Traceback" not in proc.stderr
