"""Classifier fine-tuning on an export: the code a bert4keras user writes, as one function.

    from downstream.classifier import finetune_classifier, read_csv

    result = finetune_classifier("exports/base/100000", read_csv("train.csv"), read_csv("eval.csv"))
    result["accuracy"], result["baseline"]     # held-out accuracy, majority-class accuracy

The model is the export loaded by `build_transformer_model(..., with_pool=True)`, dropout and a
softmax layer, all trained with Adam; `from_scratch=True` trains the same network from random
weights (what the pretrained weights are worth); `adversarial_epsilon` adds FGM on the word
embeddings (`downstream.adversarial`). `python -m launch.finetune_classifier` is its command line.
TensorFlow is imported on the first call, not with the module.
"""

import csv

from data_pipeline import sample_corpus


def sample_rows():
    """(sentence, package) for every sentence of 4+ words in the docstrings of two packages."""
    rows = []
    for package in ("data_pipeline", "pretrain"):
        for doc in sample_corpus.docstrings(package):
            text = " ".join(doc.split())
            rows += [(s, package) for s in sample_corpus.sentences(text, min_words=4)]
    return rows


def write_csv(path, rows):
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"text", "label"} <= set(reader.fieldnames):
            raise ValueError("%s: the first row must name the columns text,label (got %s)."
                             % (path, reader.fieldnames))
        rows = [(r["text"], r["label"]) for r in reader if r["text"] and r["label"]]
    if not rows:
        raise ValueError("%s has no rows with both text and label." % path)
    return rows


def finetune_classifier(export_dir, train_rows, eval_rows, max_len=64, epochs=3, batch_size=16,
             learning_rate=5e-5, dropout=0.1, seed=0, from_scratch=False, adversarial_epsilon=0.0,
             log=print):
    """Trains the classifier; returns {"accuracy", "baseline", "train_rows", "eval_rows", ...}.
    adversarial_epsilon > 0 trains with FGM perturbations of the word embeddings."""
    import keras
    import numpy as np

    from data_pipeline.schema import sequence_padding
    from data_pipeline.tokenizer import count_unknown, unknown_warning
    from downstream.adversarial import adversarial_training
    from downstream.backbone import build_transformer_model, check_positions
    from downstream.tokenization import load_finetune_tokenizer
    from pretrain.export_dir import ExportDir

    keras.utils.set_random_seed(seed)
    export = ExportDir(export_dir)
    check_positions(export, max_len, "rows of --max_len=%d tokens" % max_len)
    tokenizer = load_finetune_tokenizer(export.require_vocab(), export.lower_case)
    labels = sorted({label for _, label in train_rows})
    if len(labels) < 2:
        raise ValueError("The %d training rows all have the label %r: a classifier needs at least 2 "
                         "classes (it would score 1.000 on anything). Check the label column."
                         % (len(train_rows), labels[0]))
    unknown = sorted({label for _, label in eval_rows} - set(labels))
    if unknown:
        raise ValueError("Held-out labels %s never occur in the training rows." % unknown)

    def encode(rows):
        pairs = [tokenizer.encode(text, maxlen=max_len) for text, _ in rows]
        ids = sequence_padding([t for t, _ in pairs], max_len, tokenizer.special_ids.pad)
        segments = sequence_padding([s for _, s in pairs], max_len)
        return [ids, segments], np.array([labels.index(label) for _, label in rows])

    x_train, y_train = encode(train_rows)
    x_eval, y_eval = encode(eval_rows)
    pad = tokenizer.special_ids.pad
    warning = unknown_warning(*count_unknown([r[r != pad] for r in x_train[0]], tokenizer.special_ids.unk),
                              "the training rows", export.vocab_path)
    if warning:
        log(warning)
    bert = build_transformer_model(export.config_path, None if from_scratch else export,
                                   with_pool=True, padding_id=tokenizer.special_ids.pad, seed=seed)
    output = keras.layers.Dropout(dropout, seed=seed)(bert.output)
    output = keras.layers.Dense(len(labels), activation="softmax")(output)
    model = keras.Model(bert.inputs, output)
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    if adversarial_epsilon:
        adversarial_training(model, epsilon=adversarial_epsilon)
    log("fine-tuning on %d rows (%d labels), %s weights%s" % (
        len(train_rows), len(labels), "random" if from_scratch else export.prefix,
        ", FGM epsilon %g" % adversarial_epsilon if adversarial_epsilon else ""))
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=2)
    predicted = model.predict(x_eval, batch_size=64, verbose=0).argmax(-1)
    majority = np.bincount(y_train, minlength=len(labels)).argmax()
    return {"accuracy": float((predicted == y_eval).mean()),
            "baseline": float((y_eval == majority).mean()),
            "train_rows": len(train_rows), "eval_rows": len(eval_rows), "labels": labels,
            "from_scratch": from_scratch, "adversarial_epsilon": adversarial_epsilon,
            "export": export_dir}
