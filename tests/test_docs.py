"""The documentation says what exists: every name, path, link, command and flag it advertises is
checked against the code, and the README's path from a corpus to a fine-tuned model runs as written.

The documents: README.md, docs/*.md, WORKSPACE.md, benchmarks/README.md and the docstrings of the
packages' __init__.py (storage, data_pipeline, pretrain, downstream, launch); for commands, also
the docstrings of launch/, configs/ and benchmarks/ modules (their usage lines).

What counts as a name:
  * a backticked span that starts with a dotted name of two or more parts whose first part is a
    project package (storage, data_pipeline, pretrain, downstream, launch, configs, benchmarks):
    `pretrain.export`, `downstream.build_transformer_model(...)`, `launch.generate --max_len=4`
    (what follows the name, arguments or flags, is not part of it);
  * in a package's docstring, the first word of an indented tour line when `(` or two spaces
    follow it (`    run_config       checks a config`, `  loader.make_dataset(data_dir, ...)`),
    and the names after " / " on that line (`vocab.build_wordpiece / build_sentencepiece`), both
    inside that package.
  A name resolves when its longest module prefix imports and getattr finds the rest; modules that
  define flags (launch's entry points) are imported in a subprocess of their own.
What counts as a path: a backticked span without spaces whose first part is a file or folder at
the top of the repository (`pretrain/trainer.py`, `configs/data/*.py`, `tests/export/`); a glob
must match something. Markdown links to relative targets must reach a file, and an #anchor a
heading of it.
What counts as a command: see tests/doc_commands.py. Its module must exist and take every
--flag given (absl's --noX for a boolean X; --config.a.b must be a field of the command's
--config file, or of the flag's default config); a module written with <...> is a template.
"""

import glob
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import warnings

import pytest

from tests import doc_commands as docs

ROOT = docs.ROOT
PACKAGES = docs.PACKAGES + ("configs", "benchmarks")
NAME = re.compile(r"^((?:%s)(?:\.[A-Za-z_]\w*)+)(?=$|[(\s])" % "|".join(PACKAGES))
TOUR_LINE = re.compile(r"^ {2,}([A-Za-z_][\w.]*)(?:\(| {2,}| / )")
TOP = ("storage", "data_pipeline", "pretrain", "downstream", "launch", "configs", "benchmarks", "docs",
       "tests", "recipes")     # what a backticked path may start with


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")


# --- names --------------------------------------------------------------------------------------

def advertised_names():
    """[(name, where)] of every name the documents advertise (see the module docstring)."""
    found = []
    for path in docs.markdown_files():
        found += [(m.group(1), path) for span in docs.backticked(docs.read(path))
                  for m in [NAME.match(span)] if m]
    for package, doc in docs.package_docstrings().items():
        where = os.path.join(package, "__init__.py")
        found += [(m.group(1), where) for span in re.findall(r"`([^`]+)`", doc)
                  for m in [NAME.match(span)] if m]
        for line in doc.splitlines():
            tour = TOUR_LINE.match(line)
            if not tour or tour.group(1) == "python":
                continue
            first = tour.group(1)
            name = first if first.startswith(package + ".") else "%s.%s" % (package, first)
            found.append((name, where))
            parent = name.rsplit(".", 1)[0]
            head = re.split(r" {2,}", line.strip())[0]        # the names, before their description
            found += [("%s.%s" % (parent, other), where)
                      for other in re.findall(r" / ([A-Za-z_]\w*)", head)]
    return found


def _module_prefix(name):
    """The longest prefix of `name` that is a module, found without importing modules (only the
    packages above it), and the attribute path after it."""
    parts = name.split(".")
    module = None
    for i in range(1, len(parts) + 1):
        candidate = ".".join(parts[:i])
        try:
            spec = importlib.util.find_spec(candidate)
        except (ImportError, AttributeError, ValueError):
            spec = None
        if spec is None:
            break
        module = candidate
        if spec.submodule_search_locations is None:     # a module, not a package: stop here
            break
    return module, name[len(module) + 1:] if module and len(module) < len(name) else ""


def _defines_flags(module):
    origin = importlib.util.find_spec(module).origin
    with open(origin, encoding="utf-8") as f:
        return "flags.DEFINE" in f.read()


def resolves(name):
    module, rest = _module_prefix(name)
    if module is None or module.split(".")[0] not in PACKAGES:
        return False
    if not rest:
        return True
    if _defines_flags(module):
        code = ("import functools, importlib; functools.reduce(getattr, %r, importlib.import_module(%r))"
                % (rest.split("."), module))
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True)
        return done.returncode == 0
    target = importlib.import_module(module)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)     # the moved names still resolve
            for part in rest.split("."):
                target = getattr(target, part)
    except AttributeError:
        return False
    return True


def test_advertised_names_exist():
    names = advertised_names()
    assert len(names) > 50 and ("pretrain.run_config", os.path.join("pretrain", "__init__.py")) in names
    missing = sorted({(name, where) for name, where in names if not resolves(name)})
    assert not missing, "names the documentation advertises that the code lacks: %s" % missing


# --- paths and links ----------------------------------------------------------------------------

def advertised_paths():
    texts = [(p, docs.read(p)) for p in docs.markdown_files()]
    texts += [(os.path.join(p, "__init__.py"), d) for p, d in docs.package_docstrings().items()]
    found = []
    for where, text in texts:
        spans = docs.backticked(text) if where.endswith(".md") else re.findall(r"`([^`]+)`", text)
        found += [(span, where) for span in spans
                  if re.fullmatch(r"[\w.*\-/\[\]]+", span) and "/" in span and span.split("/")[0] in TOP]
    return found


def test_advertised_paths_exist():
    paths = advertised_paths()
    assert ("pretrain/trainer.py", "docs/README.md") in paths
    missing = sorted({(p, where) for p, where in paths if not glob.glob(os.path.join(ROOT, p))})
    assert not missing, "paths the documentation names that the repository lacks: %s" % missing


def _anchor(heading):
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_markdown_links_reach_their_targets():
    broken = []
    for path in docs.markdown_files():
        text = docs.without_fenced_blocks(docs.read(path))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"\w+://", target):
                continue
            file, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(ROOT, os.path.dirname(path), file)) if file \
                else os.path.join(ROOT, path)
            if not os.path.exists(full):
                broken.append((path, target))
            elif anchor and full.endswith(".md"):
                with open(full, encoding="utf-8") as f:
                    headings = re.findall(r"^#+ (.*)$", docs.without_fenced_blocks(f.read()), flags=re.M)
                if anchor not in {_anchor(h) for h in headings}:
                    broken.append((path, target))
    assert not broken, broken


# --- commands and flags -------------------------------------------------------------------------

_FLAGS_OF = r"""
import importlib, json, sys
from absl import flags
from tests.test_docs import _fields
importlib.import_module(sys.argv[1])
F = flags.FLAGS
config = F["config"].default if "config" in F else None
print(json.dumps({"names": sorted(F), "booleans": sorted(n for n in F if F[n].boolean),
                  "config_flag": "config" in F, "default_config": _fields(config)}))
"""


def _fields(config, prefix=""):
    """Every dotted field path of a ConfigDict (sections and their fields)."""
    out = []
    for key in (config.keys() if config is not None else ()):
        out.append(prefix + key)
        value = config[key]
        if hasattr(value, "keys") and hasattr(value, "to_dict"):
            out += _fields(value, prefix + key + ".")
    return out


def _module_flags(module):
    """(names, booleans, has a --config flag, the default config's fields or None) of a module,
    imported in a process of its own (entry points define flags of the same names)."""
    origin = importlib.util.find_spec(module).origin
    with open(origin, encoding="utf-8") as f:
        source = f.read()
    if "argparse" in source and "flags.DEFINE" not in source:
        return set(re.findall(r"add_argument\(\s*\"--([\w-]+)\"", source)), set(), False, None
    done = subprocess.run([sys.executable, "-c", _FLAGS_OF, module], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, "%s does not import: %s" % (module, done.stderr[-2000:])
    info = json.loads(done.stdout.strip().splitlines()[-1])
    names = set(info["names"]) | {"help", "helpfull", "helpshort", "helpxml"}   # absl's app adds them
    return names, set(info["booleans"]), info["config_flag"], info["default_config"] or None


def _config_fields(spec):
    """The fields of a config file given as --config=FILE[:ARG]."""
    path, _, arg = spec.partition(":")
    loader_spec = importlib.util.spec_from_file_location("_doc_config", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    return _fields(module.get_config(*([arg] if arg else [])))


def command_problems(commands):
    """What is wrong with each command: an unknown module, an unknown flag or config field."""
    problems, known = [], {}
    for command in commands:
        target = command.module or command.script
        if command.module and "<" in command.module:
            continue
        if command.script:
            module = command.script[:-3].replace("/", ".")
            if not os.path.exists(os.path.join(ROOT, command.script)):
                problems.append((command.source, target, "no such script"))
                continue
        else:
            module = command.module
            try:
                spec = importlib.util.find_spec(module)
            except ImportError:
                spec = None
            if spec is None:
                problems.append((command.source, target, "no such module"))
                continue
            if not spec.origin or not spec.origin.startswith(ROOT + os.sep):
                continue                              # another project's (pytest): its flags are its own
        flags_given = [a.strip("[],") for a in command.args]
        flags_given = [a for a in flags_given if a.startswith("--") and len(a) > 2]
        if not flags_given:
            continue
        if module not in known:
            known[module] = _module_flags(module)
        names, booleans, has_config, default_config = known[module]
        config_file = [a.split("=", 1)[1] for a in flags_given if a.startswith("--config=")]
        if config_file and not os.path.exists(os.path.join(ROOT, config_file[-1].partition(":")[0])):
            problems.append((command.source, target, "no config file %s" % config_file[-1]))
            continue
        for flag in flags_given:
            name = flag[2:].split("=", 1)[0]
            if name.startswith("config.") and has_config:
                fields = _config_fields(config_file[-1]) if config_file else default_config
                if fields is None:
                    problems.append((command.source, target, "%s without a --config" % flag))
                elif name[len("config."):] not in fields:
                    problems.append((command.source, target, "no config field %s" % name))
            elif name not in names and not (name.startswith("no") and name[2:] in booleans):
                problems.append((command.source, target, "no flag --%s" % name))
    return problems


def test_documented_commands_name_existing_modules_and_flags():
    commands = docs.documented_commands()
    modules = {c.module for c in commands}
    assert {"launch.quickstart", "launch.pretrain", "launch.run", "benchmarks.xla_step"} <= modules
    problems = command_problems(commands)
    assert not problems, "commands in the documentation that the code does not take: %s" % problems


def test_readme_opens_with_the_main_job_and_the_tests():
    (main,), (tests,) = docs.readme_first_commands()
    assert main.module == "launch.quickstart" and [a.split("=")[0] for a in main.args] == ["--workdir"]
    assert tests.module == "pytest" and tests.args[-1] == "tests"
    assert os.path.isdir(os.path.join(ROOT, "tests"))


# The README's path, shortened: the same commands, with these flags appended (later flags win): a
# smaller model than the quickstart's, 4 steps, one epoch of each fine-tuning.
_QUICK = {
    "launch.build_vocab": [],
    "launch.build_data": ["--noprogress"],
    "launch.pretrain": ["--config.model.hidden_size=32", "--config.model.num_attention_heads=2",
                        "--config.model.intermediate_size=64", "--config.train.global_batch_size=8",
                        "--config.train.steps=4", "--config.train.steps_per_loop=2",
                        "--config.train.checkpoint_every=2", "--config.train.eval_every=0",
                        "--config.train.eval_steps=2", "--config.optimizer.warmup_steps=2",
                        "--noprogress"],
    "launch.export": [],
    "launch.finetune_classifier": ["--epochs=1"],
    "launch.finetune_seq2seq": ["--epochs=1", "--max_source_len=24", "--max_target_len=12"],
    "launch.generate": ["--max_len=4"],
}


def test_readme_path_from_a_corpus_to_a_fine_tuned_model_runs(tmp_path):
    """The README's "From a corpus to a fine-tuned model" commands, run as written under a temporary
    workspace (`workspace/` -> tmp_path) after the quickstart's corpus, with fewer steps and epochs;
    then its Python example on the export they made."""
    from data_pipeline import sample_corpus

    workspace = str(tmp_path) + "/"
    os.makedirs(tmp_path / "quickstart")
    sample_corpus.write_corpus(str(tmp_path / "quickstart" / "corpus.txt"),
                               sample_corpus.english_documents() + sample_corpus.chinese_documents())
    commands = docs.readme_commands("launch.build_vocab")
    assert [c.module for c in commands][:4] == ["launch.build_vocab", "launch.build_data", "launch.pretrain",
                                                "launch.export"]
    assert set(c.module for c in commands) <= set(_QUICK), "a new step: give it quick flags in _QUICK"
    for command in commands:
        args = [a.replace("workspace/", workspace) for a in command.args] + _QUICK[command.module]
        done = subprocess.run([sys.executable, "-m", command.module] + args, cwd=ROOT, env=_env(),
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, "%s %s:\n%s" % (command.module, " ".join(args), done.stderr[-3000:])
    results = [json.loads(line) for line in open(tmp_path / "titles.jsonl", encoding="utf-8")]
    assert results and all("generated" in r for r in results)

    (example,) = [b for b in docs.fenced_blocks(docs.read("README.md"), ("python",))
                  if "build_transformer_model" in b]
    scope = {}
    exec(compile(example.replace("workspace/", workspace), "README.md", "exec"), scope)
    assert len(scope["token_ids"]) == len(scope["segment_ids"]) > 2 and len(scope["bert"].inputs) == 2


@pytest.mark.parametrize("typo", ["pretrain.exportt", "downstream.build_transformer_modell",
                                  "data_pipeline.loader.make_datasett", "launch.generatee"])
def test_a_misspelt_name_does_not_resolve(typo):
    assert resolves(typo[:-1]) and not resolves(typo)


def test_a_misspelt_flag_or_field_is_reported():
    line = ("python -m launch.pretrain --config=configs/quickstart.py --config.train.stepz=4 "
            "--workdirr=x --noprogres -m launch.nosuch")
    problems = command_problems(docs.commands(line, "here"))
    assert sorted(p[2] for p in problems) == ["no config field config.train.stepz", "no flag --noprogres",
                                              "no flag --workdirr", "no such module"]
