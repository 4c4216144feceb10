import importlib
import os

import pytest

from pretrain.modeling import BertConfig
from pretrain.objectives import TASKS

CONFIGS = sorted(n[:-3] for n in os.listdir(os.path.join(os.path.dirname(__file__), "..", "..", "configs"))
                 if n.endswith(".py") and n not in ("__init__.py", "base.py"))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_resolves_to_a_valid_model(name):
    module = importlib.import_module("configs." + name)
    args = ("phase1", "phase2") if name == "bert_large" else (None,)
    assert module.__doc__ and "python -m launch." in module.__doc__   # the command to run it
    for arg in args:
        c = module.get_config(arg) if arg else module.get_config()
        assert c.task in TASKS
        model = dict(c.model.to_dict(), vocab_size=c.model.vocab_size or 1000)
        model["embedding_size"] = model["embedding_size"] or None
        BertConfig.from_dict(model)
        assert c.train.global_batch_size % c.train.micro_batches == 0


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_builds_its_optimizer(name):
    """build_optimizer refuses fields it does not know: every shipped config must still build."""
    from pretrain.optimizers import build_optimizer

    module = importlib.import_module("configs." + name)
    for arg in ("phase1", "phase2") if name == "bert_large" else (None,):
        c = module.get_config(arg) if arg else module.get_config()
        build_optimizer(c.optimizer, c.train.steps, variables=[], num_layers=c.model.num_hidden_layers)


# ------------------------------------------------------------------- each fact written once

def test_the_config_dict_and_the_typed_config_are_one():
    """configs/*.py edit the ConfigDict of run_config's typed defaults; parsing one back and
    writing it out gives the same fields, values and order (a run's config.json)."""
    import json

    from configs import base
    from pretrain import run_config

    assert base.get_config().to_json() == run_config.to_config_dict().to_json()
    for name in CONFIGS:
        module = importlib.import_module("configs." + name)
        for arg in ("phase1", "phase2") if name == "bert_large" else (None,):
            c = module.get_config(arg) if arg else module.get_config()
            typed = run_config.parse(c)
            assert run_config.as_dict(typed) == json.loads(c.to_json())
            assert list(run_config.as_dict(typed)) == list(json.loads(c.to_json()))
            assert run_config.to_config_dict(typed).to_json() == c.to_json()


def test_engine_defaults_are_the_configs():
    """A section with only some fields, and the constructors called directly, get the config's
    defaults: there is no second copy of them to disagree (warmup_steps, Adam's epsilon, ...)."""
    from configs import base
    from pretrain import optimizers, run_config, schedules, updates

    full = base.get_config().optimizer
    defaults = run_config.OptimizerConfig()
    assert run_config.section(run_config.OptimizerConfig, {}, "optimizer.") == defaults
    assert run_config.section(run_config.OptimizerConfig, full, "optimizer.") == defaults
    assert (schedules.build_schedule({}, 20000).get_config()
            == schedules.build_schedule(full, 20000).get_config())
    assert schedules.build_schedule({}, 20000).warmup_steps == full.warmup_steps == 10000
    for name in ("adamw", "lamb"):
        partial = optimizers.build_optimizer({"name": name}, 20000).get_config()
        whole = optimizers.build_optimizer(dict(full.to_dict(), name=name), 20000).get_config()
        assert partial == whole
        direct = (optimizers.AdamW() if name == "adamw" else optimizers.Lamb()).get_config()
        for field in ("weight_decay", "beta_1", "beta_2", "epsilon", "exclude_from_weight_decay", "lazy"):
            assert direct[field] == whole[field] == run_config.as_dict(defaults)[field], field
        assert direct["learning_rate"] == pytest.approx(defaults.learning_rate)
    adam = optimizers.build_optimizer({"name": "adam", "weight_decay": 0.0}, 20000)
    assert adam.epsilon == defaults.epsilon == full.epsilon
    warm = schedules.WarmupDecay(1.0, 0, 10).get_config()
    assert (warm["shape"], warm["power"], warm["end"], warm["step_offset"]) == (
        defaults.decay_shape, defaults.power, defaults.end_learning_rate, defaults.step_offset)
    lookahead = optimizers.Lookahead(optimizers.AdamW())
    assert lookahead.alpha == defaults.lookahead.alpha
    # Not the config's: there 0 means no Lookahead and no EMA, here a direct call makes one.
    assert (lookahead.k, updates.WeightAverage([]).decay) == (5, 0.999)
    assert (defaults.lookahead.k, defaults.ema_decay) == (0, 0.0)


def test_the_model_section_defaults_are_google_bert_base():
    """The config's model section and modeling.BertConfig (a bert_config.json) agree: BERT-base,
    with the config's 0 for vocab_size (from the data) and embedding_size (none)."""
    import dataclasses

    from pretrain import run_config

    config = run_config.as_dict(run_config.ModelConfig())
    google = dataclasses.asdict(BertConfig(vocab_size=0))
    assert config == dict(google, embedding_size=0)


def test_every_choice_list_is_the_implementing_modules():
    """run_config checks each choice against the list of the module that implements it (one
    object, from pretrain.choices), and that module implements exactly those names."""
    import keras

    from pretrain import (choices, distribute, modeling, objectives, optimizers, run_config, schedules,
                          train_data, train_step)

    implemented = {"task": objectives.TASKS, "model.hidden_act": modeling.ACTIVATIONS,
                   "distribute.name": distribute.STRATEGIES, "optimizer.name": optimizers.OPTIMIZERS,
                   "optimizer.schedule": schedules.SCHEDULES, "optimizer.decay_shape": schedules.DECAY_SHAPES,
                   "train.precision": train_step.PRECISIONS, "data.worker_split": train_data.WORKER_SPLITS}
    choice_lists = {name: value for name, value in vars(choices).items() if isinstance(value, tuple)}
    assert set(map(id, implemented.values())) | {id(choices.DECOUPLED)} == set(map(id, choice_lists.values()))
    for path, names in implemented.items():
        assert run_config.RULES[path]("not a choice") == "must be one of %s" % ", ".join(names), path
    assert set(objectives.MASK_KIND) == set(TASKS)
    assert set(modeling._ACTIVATIONS) == set(modeling.ACTIVATIONS)
    assert set(train_step._POLICIES) == set(train_step.PRECISIONS) - {"auto"}
    for name in optimizers.OPTIMIZERS:
        decay = 0.01 if name in choices.DECOUPLED else 0.0
        built = optimizers.build_optimizer({"name": name, "weight_decay": decay, "warmup_steps": 1}, 10)
        assert isinstance(built, keras.optimizers.Optimizer)
    for name in schedules.SCHEDULES:
        schedules.build_schedule({"schedule": name, "piecewise": [[1, 1.0]], "warmup_steps": 1}, 10)
    for shape in schedules.DECAY_SHAPES:
        schedules.WarmupDecay(1.0, 1, 10, shape=shape)(5)
    with pytest.raises(distribute.StrategyError, match="one of %s\\)" % ", ".join(distribute.STRATEGIES)):
        distribute.make_strategy("not a strategy")


def test_an_optimizer_without_decay_is_refused_in_the_same_words_everywhere():
    """The config check and build_optimizer (called without it) say the same line."""
    from configs import base
    from pretrain import optimizers, run_config

    c = base.get_config()
    c.optimizer.update(name="sgd", weight_decay=0.01)
    [line] = run_config.problems(c)
    with pytest.raises(ValueError) as raised:
        optimizers.build_optimizer(c.optimizer, 20000)
    assert str(raised.value) == line == (
        "optimizer.name='sgd': Keras's sgd has no decoupled weight decay or lazy rows here; set "
        "optimizer.weight_decay=0 and optimizer.lazy=[] or use adamw/lamb")


@pytest.mark.parametrize("task, with_nsp, trains", [
    ("mlm", True, True), ("mlm", False, False), ("simbert", False, True), ("unilm", False, False),
    ("lm", False, False)])
def test_the_pooler_trains_only_under_a_loss_that_reads_it(task, with_nsp, trains):
    from pretrain import objectives

    assert objectives.pooler_trains(task, with_nsp) is trains


def test_the_config_checks_need_no_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from configs import base; from pretrain import run_config; "
            "run_config.parse(base.get_config()); assert 'tensorflow' not in sys.modules")
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
