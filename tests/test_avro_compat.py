"""Every schema in ``schemas/`` stays backward compatible with its previous committed version.

"Previous committed version": the newest version in git history whose content differs
from the file as it is now (so the check bites both before and after a change is
committed). Compatibility is checked by writing sample data with the old schema and
reading it with the new one (:mod:`tickpipe.schema_compat`).

A deliberate break before a schema's first release must be listed in ``ACCEPTED_BREAKS``
by the git blob id of the version it replaces (``git rev-parse <commit>:schemas/x.avsc``).
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest

from tickpipe.schema_compat import backward_problems

REPO = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO / "schemas"
ACCEPTED_BREAKS = {
    # gap_alert.avsc v1 was a placeholder; the sequence-integrity issue defined the real alert.
    "5eef05a91a6c6dadae6c695a7629459f324386e0",
}


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout


def in_git_checkout() -> bool:
    try:
        return git("rev-parse", "--is-inside-work-tree").strip() == "true"
    except (OSError, subprocess.CalledProcessError):
        return False


def previous_version(path: Path) -> tuple[str, dict] | None:
    """(blob id, schema) of the newest committed version that differs from the file now."""
    current = json.loads(path.read_text())
    rel = path.relative_to(REPO).as_posix()
    for commit in git("log", "--format=%H", "--", rel).split():
        try:
            text = git("show", f"{commit}:{rel}")
        except subprocess.CalledProcessError:  # deleted in that commit
            continue
        if json.loads(text) != current:
            return git("rev-parse", f"{commit}:{rel}").strip(), json.loads(text)
    return None


@pytest.mark.skipif(not in_git_checkout(), reason="needs the git history of schemas/")
@pytest.mark.parametrize("path", sorted(SCHEMA_DIR.glob("*.avsc")), ids=lambda p: p.name)
def test_schema_is_backward_compatible_with_previous_committed_version(path):
    new = json.loads(path.read_text())
    assert backward_problems(new, new) == []
    previous = previous_version(path)
    if previous is None:
        return  # never changed since its first commit
    blob, old = previous
    if blob in ACCEPTED_BREAKS:
        return
    assert backward_problems(old, new) == [], (
        f"{path.name} cannot read data written with its previous version (blob {blob}); give new fields "
        "defaults, keep types, keep enum symbols and union branches")


TRADE = json.loads((SCHEMA_DIR / "trade.avsc").read_text())


def variant(change) -> dict:
    schema = copy.deepcopy(TRADE)
    change(schema)
    return schema


def field(schema: dict, name: str) -> dict:
    return next(f for f in schema["fields"] if f["name"] == name)


@pytest.mark.parametrize("change, message", [
    (lambda s: s["fields"].append({"name": "venue_code", "type": "string"}), "No default value for field venue_code"),
    (lambda s: field(s, "price").update(type="double"), "mismatch"),
    (lambda s: field(s, "trade_id").update(type=["null", "long"]), "mismatch"),
    (lambda s: field(s, "frame_seq").update(type="int"), "mismatch"),
])
def test_breaking_changes_are_caught(change, message):
    problems = backward_problems(TRADE, variant(change))
    assert problems and message in problems[0]


def test_removed_enum_symbol_is_caught():
    old = {"type": "record", "name": "E", "fields": [{"name": "side", "type": {"type": "enum", "name": "Side",
                                                                               "symbols": ["BUY", "SELL", "NONE"]}}]}
    new = copy.deepcopy(old)
    new["fields"][0]["type"]["symbols"] = ["BUY", "SELL"]
    assert backward_problems(old, new)


@pytest.mark.parametrize("change", [
    lambda s: s["fields"].append({"name": "venue_code", "type": ["null", "string"], "default": None}),
    lambda s: s["fields"].remove(field(s, "tape")),
    lambda s: field(s, "frame_index").update(type="long"),  # int -> long is a promotion
    lambda s: field(s, "side").update(type=["null", "string", "long"]),
])
def test_compatible_changes_pass(change):
    assert backward_problems(TRADE, variant(change)) == []
