"""The documentation: it builds without warnings, its links and the README's stay
inside the repository, and its examples run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = sorted((REPO / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_docs_build_strict(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    for page in ("index", "physics", "lindblad", "networks", "qflow", "cli", "api"):
        assert (tmp_path / page / "index.html").is_file() or page == "index"
    assert (tmp_path / "index.html").is_file()


@pytest.mark.parametrize("doc", [REPO / "README.md", *PAGES], ids=lambda p: p.name)
def test_links_stay_inside_the_repository(doc):
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path = (doc.parent / target).resolve()
        assert path.is_relative_to(REPO), f"{doc.name}: link outside the repo {target}"
        assert path.exists(), f"{doc.name}: broken link {target}"
