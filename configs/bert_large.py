"""BERT-large (340M), the two-phase LAMB recipe (You et al. 2019): seq 128, then seq 512.

    python -m launch.pretrain --config=configs/bert_large.py:phase1 \
        --config.data.train_dir=gs://b/data/large_128 --workdir=gs://b/runs/large \
        --config.distribute.name=tpu --config.distribute.tpu=local
    python -m launch.export --workdir=gs://b/runs/large --output=gs://b/exports/large_phase1
    python -m launch.pretrain --config=configs/bert_large.py:phase2 \
        --config.data.train_dir=gs://b/data/large_512 --workdir=gs://b/runs/large_phase2 \
        --config.init_checkpoint=gs://b/exports/large_phase1 ...

Phase 2 starts from phase 1's weights (init_checkpoint) with a fresh LAMB state and its own warmup
and polynomial decay, as in NVIDIA's recipe, with recompute on for the 512-token activations. To
continue phase 1's schedule instead, set optimizer.schedule fields with
--config.optimizer.step_offset=7038 (the step count carries on).
Expect MLM accuracy around 0.7 at the end of phase 2 on Wikipedia + BookCorpus.

Both phases use precision "auto": bfloat16 on TPUs (the recipe's home; the matrix units multiply
in bfloat16, its float32-sized exponent needs no loss scaling, and activations take half the
memory, which phase 2's 512-token batches need), float32 elsewhere. Weights, LAMB's moments and
trust ratios, the softmax and the losses stay float32 (mixed_bfloat16).
"""

from configs import base

PHASE1_STEPS = 7038


def get_config(phase="phase1"):
    c = base.get_config()
    c.model.update(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
    c.optimizer.update(name="lamb", weight_decay=0.01, beta_2=0.999)
    c.train.precision = "auto"
    if phase == "phase1":
        c.train.update(global_batch_size=65536, micro_batches=64, steps=PHASE1_STEPS, steps_per_loop=10)
        c.optimizer.update(learning_rate=6e-3, warmup_steps=2000, decay_shape="polynomial", power=0.5)
    elif phase == "phase2":
        c.train.update(global_batch_size=32768, micro_batches=128, steps=1563, steps_per_loop=10,
                       recompute=True)
        c.optimizer.update(learning_rate=4e-3, warmup_steps=200, decay_shape="polynomial", power=0.5)
    else:
        raise ValueError("bert_large.py takes phase1 or phase2, got %r" % phase)
    return c
