"""The set-up's folders stay out of git whether they are folders or links to another checkout's.

A worktree that links ``.venv``, ``.tools``, ``.venv-tools`` and ``node_modules`` to the main checkout's
(as the engineers' review worktrees do) committed the links: the ignore patterns ended in ``/``, which
matches directories only. Cherry-picking that commit into the main checkout then replaced its real folders
with links to themselves (git treats ignored files as expendable), so every tool vanished mid-session."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SET_UP = (".venv", ".venv-tools", ".tools", "node_modules")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_the_set_up_folders_are_ignored_as_folders_and_as_links(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / ".gitignore", repo / ".gitignore")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in SET_UP:
        (repo / name).symlink_to(elsewhere)
    (repo / "nested").mkdir()
    for name in SET_UP:
        (repo / "nested" / name).mkdir()
        (repo / "nested" / name / "file").write_text("x")
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    assert status == ["?? .gitignore"], status
