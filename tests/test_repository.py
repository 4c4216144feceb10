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


# The packages in import order: a module may import its own package and those before it, never
# one after it (launch -> downstream -> pretrain -> data_pipeline -> storage).
_LAYERS = ("storage", "data_pipeline", "pretrain", "downstream", "launch")


def _imported_packages(path):
    import ast

    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def test_no_package_imports_a_later_one():
    upward = []
    for rank, package in enumerate(_LAYERS):
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    upward += [(os.path.relpath(path, ROOT), imported)
                               for imported in _imported_packages(path)
                               if imported in _LAYERS and _LAYERS.index(imported) > rank]
    assert not upward, upward
