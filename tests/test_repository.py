"""The repository stands alone: it cites no document a user's clone lacks, and every section of
docs/FORMATS.md that the code cites exists."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _texts():
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("workspace", "__pycache__")]
        for name in files:
            if name.endswith((".py", ".md", ".sbatch", ".yaml", ".txt")):
                path = os.path.join(folder, name)
                with open(path, encoding="utf-8") as f:
                    yield os.path.relpath(path, ROOT), f.read()


def test_no_file_cites_documents_outside_the_repository():
    forbidden = re.compile(r"CONTRACTS\.md|shared/design|STYLE\.md")
    cited = [(path, m.group(0)) for path, text in _texts() for m in forbidden.finditer(text)
             if path != os.path.join("tests", "test_repository.py")]
    assert not cited, cited


def test_cited_format_sections_exist():
    with open(os.path.join(ROOT, "docs", "FORMATS.md"), encoding="utf-8") as f:
        sections = set(re.findall(r"^## (\d+)\. ", f.read(), flags=re.M))
    cited = {(path, n) for path, text in _texts() for n in re.findall(r"FORMATS\.md §(\d+)", text)}
    assert cited and not [c for c in cited if c[1] not in sections], cited
