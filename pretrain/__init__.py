"""The pretraining engine: the BERT network, its heads and losses, the optimizers, the training
loop on `tf.distribute`, checkpoints, and the export it writes (Google's checkpoint layout).

    python -m launch.pretrain --config=configs/base.py --workdir=runs/base     # train
    python -m launch.export --workdir=runs/base --output=exports/base          # export

The modules, in the order a step meets them:
    run_config       the config's fields, their defaults and checks (typed sections), checked
                     before TensorFlow loads
    choices          the names a config chooses among (tasks, optimizers, ...), TF-free
    distribute       the tf.distribute strategy for a cluster (TPU, multi-worker, mirrored, one device)
    train_data       the run's input: the data build's shards through `data_pipeline.loader`
    modeling         BertConfig and the network (embeddings, encoder, pooler, MLM and NSP heads)
    objectives       the tasks' losses and metrics (MLM, NSP, UniLM, LM, SimBERT)
    schedules        learning-rate schedules
    optimizers       AdamW, LAMB, Lookahead, ScaledLR, EMA, and `build_optimizer`
    updates          which variables train and how gradients are clipped and applied
    train_step       one update: accumulation, recompute, mixed precision, XLA
    trainer          Trainer: the loop, eval, checkpoints, resume, preemption, metrics
    checkpoints      Checkpoints: saving and restoring a run's state, atomically
    rundir           RunDir: the layout of a run's working directory
    reporting        metrics.jsonl, TensorBoard and the progress line
    probes           downstream probes: a linear classifier on the encoder's features, per evaluation
    google_checkpoint  Google's checkpoint layout: variable names, reading and writing
    init_checkpoint  continued pretraining from a released checkpoint (vocabulary mapping)
    export           a run's checkpoint -> an export directory

What uses an export (fine-tuning, generation, SimBERT, seq2seq, FGM) is the `downstream` package.
Importing this package does not import TensorFlow, so `pretrain.run_config` checks a config in a
second.
"""

# The fine-tuning API lived here until `downstream` took it: the old names still work for one
# release, with a DeprecationWarning that says where they went.
_MOVED = {"build_transformer_model": "downstream.backbone",
          "load_finetune_tokenizer": "downstream.tokenization",
          "sequence_padding": "downstream.tokenization",
          "load_tokenizer": "downstream.tokenization"}   # the first release's load_finetune_tokenizer


def __getattr__(name):
    if name in _MOVED:
        import importlib
        import warnings
        warnings.warn("pretrain.%s moved to downstream.%s; import it from there (the old name goes "
                      "in the next release)." % (name, name if name != "load_tokenizer"
                                                 else "load_finetune_tokenizer"),
                      DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError("module 'pretrain' has no attribute %r" % name)
