"""The package docstrings of storage and data_pipeline are tours of their modules: every module
has its line, and every name a line names (`name`) exists in that module."""

import importlib
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("package", ["storage", "data_pipeline"])
def test_the_tour_names_every_module_and_only_names_that_exist(package):
    modules = sorted(n[:-3] for n in os.listdir(os.path.join(ROOT, package))
                     if n.endswith(".py") and n != "__init__.py")
    lines = importlib.import_module(package).__doc__.splitlines()
    toured, missing = [], []
    for k, line in enumerate(lines):
        match = re.match(r" {4}(\w+)\s{2,}\S", line)
        if not match or match.group(1) not in modules:
            continue
        module = importlib.import_module("%s.%s" % (package, match.group(1)))
        toured.append(match.group(1))
        # A module's text runs on over the more-indented lines below it.
        text = line + "".join(rest for rest in lines[k + 1:k + 3] if re.match(r" {5,}\S", rest))
        missing += ["%s.%s" % (module.__name__, name) for name in re.findall(r"`(\w+)`", text)
                    if not hasattr(module, name)]
    assert sorted(toured) == modules
    assert not missing, missing
