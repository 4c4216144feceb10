"""The multi-worker test config: the tiny BERT of tests/pretrain/conftest.py, dropout off (so that
1 replica of 8 rows and 2 replicas of 4 rows compute the same update), on MultiWorkerMirrored.

    python -m launch.run --nproc_per_node=2 -m launch.pretrain \
        --config=tests/launch/tiny.py:<data_dir> --workdir=<run>
"""

from tests.pretrain.conftest import tiny_config


def get_config(data_dir):
    c = tiny_config(data_dir, steps=40, steps_per_loop=2, checkpoint_every=4, eval_steps=2)
    c.model.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    c.distribute.name = "multi_worker_mirrored"
    return c
