"""A small real-text corpus derived from the project itself, for the quickstart and the tests.

English: the project's documentation (README.md, the manual in docs/, WORKSPACE.md,
benchmarks/README.md) and module docstrings, one sentence per line, a blank line between documents
(Google's convention), each paragraph once. Chinese: `sample_zh.txt` beside this file, short original paragraphs
written for the project. Nothing is downloaded.
"""

import ast
import os
import re

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`(\[])")


def english_documents():
    docs = []
    for path in documentation():
        if os.path.exists(path):
            docs.extend(p for p in open(path, encoding="utf-8").read().split("\n\n"))
    for package in ("data_pipeline", "launch", "pretrain", "downstream", "configs"):
        docs.extend(docstrings(package))
    out, seen = [], set()
    for doc in docs:
        text = " ".join(line.strip() for line in doc.splitlines() if line.strip())
        found = sentences(text, min_words=3)
        # A paragraph the docs repeat (a short lead on the front page and in the manual) is one
        # document: the corpus has no duplicates, so the tests' dedup counts start from zero.
        if found and text not in seen:
            seen.add(text)
            out.append(found)
    return out


def documentation():
    """The project's Markdown files in reading order: the front page, the manual, the operator's guide,
    the benchmarks (the manual's pages sorted by name, so the corpus is the same on every machine)."""
    docs = os.path.join(_ROOT, "docs")
    manual = sorted(os.path.join(docs, n) for n in os.listdir(docs) if n.endswith(".md")) \
        if os.path.isdir(docs) else []
    return ([os.path.join(_ROOT, "README.md")] + manual
            + [os.path.join(_ROOT, "WORKSPACE.md"), os.path.join(_ROOT, "benchmarks", "README.md")])


def sentences(text, min_words):
    """`text` split at sentence ends, keeping sentences of at least `min_words` words."""
    return [s for s in _SENTENCE_END.split(text) if len(s.split()) >= min_words]


def docstrings(package):
    """The docstrings of a package's modules, classes and functions (files sorted, tree order)."""
    folder = os.path.join(_ROOT, package)
    out = []
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".py"):
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                tree = ast.parse(f.read())
            for node in ast.walk(tree):
                if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)):
                    doc = ast.get_docstring(node)
                    if doc:
                        out.append(doc)
    return out


def chinese_documents():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_zh.txt")
    text = open(path, encoding="utf-8").read()
    return [[s for s in block.splitlines() if s.strip()] for block in text.split("\n\n") if block.strip()]


def write_corpus(path, documents):
    """Writes `documents` (lists of sentences) one sentence per line, a blank line between
    documents. A file that already holds exactly this text is left alone: its modification time
    is part of a data build's fingerprint, so a rerun of the quickstart resumes its build."""
    text = ("\n\n".join("\n".join(doc) for doc in documents) + "\n").encode("utf-8")
    if os.path.exists(path) and os.path.getsize(path) == len(text):
        with open(path, "rb") as f:
            if f.read() == text:
                return path
    with open(path, "wb") as f:
        f.write(text)
    return path


def seq2seq_records():
    """Title-generation-like pairs from the sample text: the rest of a document -> its first sentence."""
    return [{"source": " ".join(doc[1:]), "target": doc[0]}
            for doc in english_documents() + chinese_documents() if len(doc) >= 2]


def synonym_groups():
    """SimBERT-style groups from the sample text: the sentences of one paragraph (a weak positive
    set, for exercising the pipeline, not a paraphrase corpus)."""
    return [{"text": doc[0], "synonyms": doc[1:]}
            for doc in english_documents() + chinese_documents() if len(doc) >= 2]


def write_jsonl(path, records):
    import json

    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path
