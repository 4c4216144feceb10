"""The names a pretraining config chooses among, each list written here once, without TensorFlow.

Every list belongs to the engine module that implements its names, which imports it from here
(`objectives.TASKS is choices.TASKS`) and implements exactly these names
(tests/pretrain/test_configs.py checks each one); `run_config` imports them from here too, to
check a config in a second, before TensorFlow is imported. They cannot live in the implementing
modules themselves: those subclass Keras classes or build on modules that do, so importing them
imports TensorFlow.
"""

TASKS = ("mlm", "unilm", "lm", "simbert")                     # objectives: losses, attention masks
ACTIVATIONS = ("gelu", "gelu_new", "relu", "tanh")             # modeling: hidden_act
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")   # distribute
OPTIMIZERS = ("adamw", "lamb", "adam", "sgd")                  # optimizers: the base optimizers
DECOUPLED = ("adamw", "lamb")                                  # optimizers: those with weight decay
                                                               # and lazy rows of their own
SCHEDULES = ("warmup_decay", "piecewise")                      # schedules
DECAY_SHAPES = ("linear", "polynomial", "cosine", "constant")  # schedules: WarmupDecay's shape
PRECISIONS = ("auto", "float32", "bfloat16", "float16")        # train_step (auto: trainer)
WORKER_SPLITS = ("files", "rows")                              # train_data
