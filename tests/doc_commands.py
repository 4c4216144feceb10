"""The documentation as data: its files, fenced blocks, backticked spans and command lines, for the
tests that hold the documentation to the code (tests/test_docs.py, tests/launch/test_quickstart.py).

A command is what follows `-m MODULE` (or a script `path.py` after `python`) up to the next
`-m`, `python`, `--`, `&&`, `;` or `|`: so `python -m launch.run --nproc_per_node=2 -m
launch.pretrain --config=...` is two commands, the launcher's and its program's, and `tpu_vm run
... -- python3 -m launch.pretrain ...` is too.
"""

import ast
import collections
import glob
import os
import re
import shlex

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("storage", "data_pipeline", "pretrain", "downstream", "launch")

Command = collections.namedtuple("Command", "module script args source")


def markdown_files():
    """README.md, the manual (docs/*.md), WORKSPACE.md and benchmarks/README.md, relative to ROOT."""
    manual = sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
    return ["README.md"] + manual + ["WORKSPACE.md", os.path.join("benchmarks", "README.md")]


def read(relpath):
    with open(os.path.join(ROOT, relpath), encoding="utf-8") as f:
        return f.read()


def package_docstrings():
    """{package: its __init__.py docstring}."""
    return {p: ast.get_docstring(ast.parse(read(os.path.join(p, "__init__.py")))) or "" for p in PACKAGES}


def fenced_blocks(text, languages=("bash", "")):
    """The fenced blocks (```lang ... ```) of a Markdown text whose language is one of `languages`."""
    return [m.group(2) for m in re.finditer(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", text, flags=re.M | re.S)
            if m.group(1) in languages]


def without_fenced_blocks(text):
    return re.sub(r"^[ \t]*```.*?^[ \t]*```", "", text, flags=re.M | re.S)


def backticked(text):
    """The `spans` of a text outside its fenced blocks (a span does not cross a blank line)."""
    return re.findall(r"`([^`\n]+(?:\n[^`\n]+)*?)`", without_fenced_blocks(text))


def shell_lines(block):
    """A shell block's logical lines: continuations (trailing backslash) joined, comments kept out."""
    lines, current = [], ""
    for line in block.splitlines():
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    if current:
        lines.append(current)
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def commands(line, source=""):
    """The commands of one logical shell line (see the module docstring)."""
    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:            # an unbalanced quote: not a shell line
        return []
    found, current, i = [], None, 0
    while i < len(tokens):
        token = tokens[i]
        if token == "-m" and i + 1 < len(tokens):
            current = Command(tokens[i + 1], None, [], source)
            found.append(current)
            i += 2
            continue
        if token in ("--", "&&", ";", "|", "||") or token in ("python", "python3"):
            current = None
            if token in ("python", "python3") and i + 1 < len(tokens) and tokens[i + 1].endswith(".py"):
                current = Command(None, tokens[i + 1], [], source)
                found.append(current)
                i += 1
        elif current is not None:
            current.args.append(token)
        i += 1
    return found


def documented_commands():
    """Every `python -m` command of the Markdown documents (fenced bash blocks and backticked spans)
    and of the docstrings of the packages and of launch/, configs/ and benchmarks/ modules."""
    found = []
    for path in markdown_files():
        text = read(path)
        for block in fenced_blocks(text):
            for line in shell_lines(block):
                found += commands(line, path)
        for span in backticked(text):
            if re.search(r"\bpython3? -m ", span):
                found += commands(span.replace("\n", " "), path)
    docstrings = [(os.path.join(p, "__init__.py"), d) for p, d in package_docstrings().items()]
    for folder in ("launch", "configs", os.path.join("configs", "data"), "benchmarks"):
        for path in sorted(glob.glob(os.path.join(ROOT, folder, "*.py"))):
            rel = os.path.relpath(path, ROOT)
            docstrings.append((rel, ast.get_docstring(ast.parse(read(rel))) or ""))
    for path, doc in docstrings:        # command lines (indented examples) and `spans` in the prose
        for line in shell_lines(doc):
            if re.match(r"\s*python3? ", line):
                found += commands(line, path)
        for span in re.findall(r"`([^`]+)`", doc):
            if re.search(r"\bpython3? -m ", span):
                found += commands(span.replace("\n", " "), path)
    return found


def readme_commands(block_containing):
    """The commands of the README's first bash block that contains `block_containing`."""
    for block in fenced_blocks(read("README.md"), ("bash",)):
        if block_containing in block:
            return [c for line in shell_lines(block) for c in commands(line, "README.md")]
    raise AssertionError("README.md has no bash block with %r" % block_containing)


def readme_first_commands():
    """The README's first two command lines, as they stand at its top."""
    first = fenced_blocks(read("README.md"), ("bash",))[0]
    return [commands(line, "README.md") for line in shell_lines(first)[:2]]
