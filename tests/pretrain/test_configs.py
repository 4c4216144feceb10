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
