"""Exports a pretraining run as a Google BERT checkpoint directory (docs/FORMATS.md §2).

    export(workdir="runs/base", output="exports/base/100000")          # latest step
    export(workdir="runs/base", output="gs://b/exports/base/ema", step=100000, ema=True)

The output holds what fine-tuning code loads, and none of the training state (no optimizer
slots, no step counters):

    bert_config.json                    Google's keys (+ embedding_size when factorized)
    bert_model.ckpt.index, bert_model.ckpt.data-00000-of-00001
                                        name-based checkpoint: `bert/...` and `cls/...` variables
    vocab.txt | sentencepiece.model     the vocabulary the run's data was tokenized with (the copy
                                        in the run directory; older runs: the data's)
    export_manifest.json                source run and step, heads, vocab, metrics, checksums
    hf/                                 with formats=("google", "hf"): the same weights as a
                                        transformers 5 directory (config.json, model.safetensors,
                                        tokenizer files, README.md model card; `hf_format`)
                                        formats=(..., "sentence_transformers") adds modules.json
                                        and 1_Pooling/ 2_Dense/ 3_Normalize/ to it (SimBERT's
                                        vectors; weights whose pooler was trained)
    keras_hub/                          with formats=(..., "keras_hub"): a KerasHub preset
                                        (config.json, model.weights.h5, task.json, task.weights.h5,
                                        tokenizer.json, assets/...; `keras_hub_format`)

The Google layout is always at the top: it is what the manifest describes, what this project's
loaders and continued pretraining read, and what existing users expect there. Other formats are
written beside it, in the subdirectory `export_dir.FORMAT_DIRS` names, and listed in the
manifest's `formats` (absent when it is the Google layout alone, as in every older export).

The checkpoint is written by TensorFlow's V2 bundle writer (`tf.raw_ops.SaveV2`) under the names of
`modeling.google_variables`, so `tf.train.load_checkpoint`, bert4keras, HF transformers' TF loader
and google-research/bert read it by name. MLM, UniLM, LM and SimBERT runs export the same
variables (a task lives in the attention mask, not in weights); NSP weights when the run had them.

The weights are read by variable name (`variable.path`), through the object graph of the
training checkpoint, so an export does not depend on how the trainer's checkpoint reaches each
variable (model, optimizer or EMA), nor on rebuilding the optimizer that wrote it.

Writing is all or nothing: the files are staged in a temporary directory and renamed into place
when complete (gs:// outputs: uploaded with CRC32C checks, the manifest last). An output that
already holds this export is left as it is; one that holds anything else is refused.
"""

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from data_pipeline.manifest import Manifest, ManifestError
from data_pipeline.tokenizer import VocabError, load_tokenizer
from pretrain import google_checkpoint, hf_format, keras_hub_format, objectives, updates
from pretrain.export_dir import (BERT_CONFIG, CHECKPOINT, EXPORT_MANIFEST, FORMAT_DIRS, VOCAB_FILES,
                                 ExportManifest)
from pretrain.google_checkpoint import CheckpointError
from pretrain.modeling import BertConfig, build_model, google_variables
from pretrain.rundir import RunDir
from storage import fs, gcs

_ADVICE = "export another step with --step"
_OBJECT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"


class ExportError(RuntimeError):
    """An export that cannot be made; the message says what to change."""


def export(workdir: str, output: str, step=None, ema: bool = False, vocab=None, log=None,
           formats=("google",)) -> ExportManifest:
    """Exports the run in `workdir` at `step` (default: its latest checkpoint) to `output`.

    Args:
      workdir: a `launch.pretrain` run directory (config.json, checkpoints/), local or gs://.
      output: the export directory, local or gs://; must not exist, be empty, or hold this export.
      step: the checkpoint step to export; None for the latest.
      ema: export the exponential moving average of the weights kept by the run.
      vocab: the vocabulary file, when the path recorded in the data manifest is not readable
        here (checked against the manifest's sha256).
      log: a function taking one line of progress text.
      formats: what to write besides the Google layout (always written, at the top): "hf" adds a
        transformers directory in output/hf/; "sentence_transformers" (implies "hf") makes that
        directory a sentence-transformers model too; "keras_hub" adds a KerasHub preset in
        output/keras_hub/.

    Returns:
      The export's manifest (written as output/export_manifest.json).
    """
    log = log or (lambda text: None)
    formats = format_dirs(formats)
    rundir = RunDir(workdir)
    run = read_run_config(rundir)
    checkpoint = find_checkpoint(rundir, step)
    source = {"workdir": workdir if fs.is_remote(workdir) else os.path.abspath(workdir),
              "checkpoint": os.path.basename(checkpoint),
              "step": RunDir.step_of(checkpoint), "ema": bool(ema),
              "index_sha256": fs.sha256(checkpoint + ".index")}
    existing = _existing_export(output)
    if existing is not None:
        if _same_source(existing.source, source):
            missing = sorted(set(formats) - set(existing.formats))
            if missing:
                raise ExportError("%s already holds this export, without %s. Export to another "
                                  "--output, or delete it first." % (output, ", ".join(missing)))
            log("%s already holds this export (step %d%s); nothing to do."
                % (output, source["step"], ", EMA" if ema else ""))
            return existing
        old = existing.source
        raise ExportError("%s already holds a different export (step %s%s of %s). Choose another "
                          "--output, or delete it first." % (output, old.get("step"), ", EMA" if
                                                            old.get("ema") else "", old.get("workdir")))
    config = _model_config(run, workdir)
    vocab_info = _find_vocab(rundir, run, config, vocab)
    _check_formats(formats, config, run.get("task") or "mlm", vocab_info)
    staging = _staging_dir(output)
    try:
        values, heads = restore_weights(checkpoint, config, ema)
        heads["pooler_trained"] = objectives.pooler_trains(run.get("task"), heads["nsp"])
        card = dict(run=source["workdir"], step=source["step"], checkpoint=source["checkpoint"],
                    ema=source["ema"], data=(run.get("data") or {}).get("train_dir"), config=run)
        manifest = _write(staging, values, config, vocab_info, heads, run, source,
                          _metrics(rundir, source["step"]), formats, card)
        _publish(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log("Exported step %d%s of %s to %s (%d variables)." % (
        source["step"], " (EMA weights)" if ema else "", workdir, output, len(values)))
    return manifest


def export_model(model, output: str, vocab: str, task: str, source: dict, metrics=None,
                 settings=None, lower_case=None, log=None, formats=("google",)) -> ExportManifest:
    """Writes a model trained outside a pretraining run (fine-tuning) as an export, in the layout
    `export` writes, so that everything that reads exports reads it.

    Args:
      model: the `BertPretrainingModel` (a `BertBackbone`'s `.bert`).
      output: a new export directory, local or gs://; one that holds anything is refused.
      vocab: the vocabulary file the model's inputs were tokenized with.
      task: what it was trained for ("unilm", "classifier", ...), recorded in the manifest.
      source: where the weights came from (e.g. {"export": DIR}), recorded as the manifest's source.
      metrics: {split: {name: value}} to record; settings: the training settings to record.
      lower_case: the tokenizer's case folding (None: as `load_tokenizer` defaults).
      log: a function taking one line of text.
      formats: as `export`'s.

    Example:
      export_model(backbone.bert, "exports/titles/1", "exports/base/vocab.txt", "unilm",
                   {"export": "exports/base"}, metrics={"eval": {"rouge_l": 0.41}})
    """
    formats = format_dirs(formats)
    if _existing_export(output) is not None:
        raise ExportError("%s already holds an export. Choose another output directory, or delete "
                          "it first." % output)
    try:
        vocab_info = load_tokenizer(vocab, lower_case=lower_case).describe()
    except VocabError as e:
        raise ExportError(str(e))
    _check_formats(formats, model.config, task, vocab_info)
    if vocab_info.vocab_size != model.config.vocab_size:
        raise ExportError("The vocabulary %s has %d tokens but the model has vocab_size=%d."
                          % (vocab, vocab_info.vocab_size, model.config.vocab_size))
    values = {name: v.numpy().astype(np.float32) for name, v in google_variables(model).items()}
    heads = {"mlm": True, "pooler": True, "nsp": bool(model.with_nsp), "pooler_trained": False}
    staging = _staging_dir(output)
    try:
        manifest = _write(staging, values, model.config, vocab_info, heads,
                          {"task": task, "settings": settings or {}}, source, metrics or {}, formats,
                          dict(source, task=task, settings=settings or {}))
        _publish(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    (log or (lambda text: None))("Exported the %s model to %s (%d variables)." % (task, output, len(values)))
    return manifest


# ---------------------------------------------------------------------------------- the run

def read_run_config(rundir: RunDir) -> dict:
    run = rundir.read_run_config()
    if run is None:
        raise ExportError("%s has no config.json: is it a pretraining run directory (the --workdir "
                          "of `python -m launch.pretrain`)?" % rundir.workdir)
    return run


def find_checkpoint(rundir: RunDir, step=None) -> str:
    """The checkpoint prefix (…/checkpoints/ckpt-N) of `step`, or of the latest step."""
    steps = rundir.checkpoint_steps()
    if not steps:
        raise ExportError("%s holds no checkpoint yet (nothing in %s)." % (rundir.workdir,
                                                                          rundir.checkpoints))
    if step is None:
        step = steps[-1]
    if step not in steps:
        raise ExportError("%s has no checkpoint for step %d; available steps: %s."
                          % (rundir.workdir, step, ", ".join(map(str, steps))))
    return rundir.checkpoint(step)


def _model_config(run, workdir):
    try:
        return BertConfig.from_dict(run["model"])
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError("%s/config.json has no usable model section: %s" % (workdir, e))


def restore_weights(checkpoint: str, config: BertConfig, ema: bool = False):
    """({Google name: float32 array}, {"nsp": bool}) from a training checkpoint.

    Each model variable is read under the checkpoint key that the checkpoint's object graph records
    for its name (`variable.path`): whatever path led the trainer's checkpoint to it (model,
    optimizer or anything else), and without rebuilding the optimizer. EMA shadows are restored
    through a `WeightAverage` of the model's trainable variables, as the trainer keeps them.
    """
    reader = _open(checkpoint)
    keys = _keys_by_variable_name(reader, checkpoint)
    model = build_model(config, with_nsp=True)   # NSP names are dropped below when not trained
    values = {}
    for name, variable in google_variables(model).items():
        key = keys.get(variable.path)
        if key is None:
            if name.startswith("cls/seq_relationship/"):
                continue
            raise ExportError("Checkpoint %s holds no value for %s (model variable %s): config.json's "
                              "model section does not describe it." % (checkpoint, name, variable.path))
        values[name] = _tensor(reader, key, checkpoint).astype(np.float32)
    with_nsp = any(name.startswith("cls/seq_relationship/") for name in values)
    if ema:
        values.update(_ema_values(checkpoint, build_model(config, with_nsp=with_nsp)))
    for name, variable in google_variables(model).items():
        if name in values and tuple(values[name].shape) != tuple(variable.shape):
            raise ExportError("Checkpoint %s has %s with shape %s, but config.json's model section "
                              "gives %s." % (checkpoint, name, list(values[name].shape),
                                             list(variable.shape)))
    bad = [name for name, value in values.items() if not np.isfinite(value).all()]
    if bad:
        raise ExportError("Checkpoint %s has non-finite values in %s; export another step."
                          % (checkpoint, ", ".join(bad[:3])))
    return values, {"mlm": True, "pooler": True, "nsp": with_nsp}


def _open(checkpoint):
    try:
        return google_checkpoint.open_reader(checkpoint, _ADVICE)
    except CheckpointError as e:
        raise ExportError(str(e))


def _keys_by_variable_name(reader, checkpoint):
    """{variable name: checkpoint key} from the object graph every TF2 checkpoint carries."""
    if not reader.has_tensor(_OBJECT_GRAPH):
        raise ExportError("%s is not a training checkpoint of launch.pretrain (no object graph)."
                          % checkpoint)
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(_tensor(reader, _OBJECT_GRAPH, checkpoint))
    keys = {}
    for node in graph.nodes:
        for attribute in node.attributes:
            if attribute.name == "VARIABLE_VALUE" and attribute.full_name:
                keys.setdefault(attribute.full_name, attribute.checkpoint_key)
    return keys


def _tensor(reader, key, checkpoint):
    try:
        return google_checkpoint.read_tensor(reader, checkpoint, key, _ADVICE)
    except CheckpointError as e:
        raise ExportError(str(e))


def _ema_values(checkpoint, model):
    average = updates.WeightAverage(model.trainable_variables)
    try:
        status = tf.train.Checkpoint(ema=average).read(checkpoint).expect_partial()
        status.assert_existing_objects_matched()
    except AssertionError:
        raise ExportError("--ema: checkpoint %s holds no moving average of these weights (the run "
                          "was trained without EMA, optimizer.ema_decay=0). Export without --ema."
                          % checkpoint)
    except (tf.errors.OpError, ValueError, IndexError) as e:
        raise ExportError("--ema: cannot read the moving average in %s: %s."
                          % (checkpoint, google_checkpoint.first_line(e)))
    average.copy_to(model.trainable_variables)
    return {name: v.numpy().astype(np.float32) for name, v in google_variables(model).items()}


def _find_vocab(rundir, run, config, override):
    """The vocabulary the run trained with: its copy in the run directory (or, for runs from
    before copies were made, the one the data manifest names), as `describe()` of its tokenizer."""
    recorded = rundir.vocab()
    where = "the run directory %s" % rundir.workdir
    if recorded is None:   # an older run: the data directory's manifest names the vocabulary
        data_dir = (run.get("data") or {}).get("train_dir") or ""
        where = "the manifest of %s" % data_dir
        try:
            recorded = Manifest.load(data_dir).vocab if data_dir else None
        except ManifestError:
            pass
    path = override or (recorded.path if recorded else None)
    if not path:
        raise ExportError("Cannot find the run's vocabulary: %s has no vocab/ copy (a run from an "
                          "older version) and its data directory has no readable manifest.json "
                          "naming one. Pass --vocab=PATH (the vocab.txt or .model the data was built "
                          "with)." % rundir.workdir)
    if not fs.exists(path):
        raise ExportError("The vocabulary %s (recorded in %s) does not exist here. Pass "
                          "--vocab=PATH to a copy of it (checked against the recorded sha256)."
                          % (path, where))
    try:
        info = load_tokenizer(path, lower_case=recorded.lower_case if recorded else None).describe()
    except VocabError as e:
        raise ExportError(str(e))
    if recorded and info.sha256 != recorded.sha256:
        raise ExportError("%s is not the vocabulary the run was trained with (sha256 %s…, %s says "
                          "%s…)." % (path, info.sha256[:12], where, recorded.sha256[:12]))
    if info.vocab_size != config.vocab_size:
        raise ExportError("The vocabulary %s has %d tokens but the model has vocab_size=%d."
                          % (path, info.vocab_size, config.vocab_size))
    return info


def _metrics(rundir, step):
    """The last train and eval rows of metrics.jsonl at or before `step`."""
    out = {}
    for record in rundir.metrics_rows():
        if record.get("step", step + 1) <= step:
            out[record.get("split", "train")] = record
    return out


# ------------------------------------------------------------------------------- the output

def format_dirs(formats) -> dict:
    """{format: subdirectory} of the formats asked for ("google,hf" or a sequence of names); the
    Google layout is always among them, and hf where sentence_transformers is (its directory). An
    ExportError names an unknown format."""
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    names = [name.strip() for name in names if name.strip()]
    unknown = [name for name in names if name not in FORMAT_DIRS]
    if unknown:
        raise ExportError("--format=%s: unknown format %s; use a comma-separated list of %s."
                          % (",".join(names), ", ".join(unknown), ", ".join(FORMAT_DIRS)))
    if "sentence_transformers" in names:
        names.append("hf")
    return {name: FORMAT_DIRS[name] for name in FORMAT_DIRS if name == "google" or name in names}


def _check_formats(formats, config, task, vocab_info):
    """Refuses, before anything is written, a model (of `task`, with the vocabulary `vocab_info`
    describes) that a requested format cannot hold."""
    if "hf" in formats:
        try:
            hf_format.check_exportable(config)
        except hf_format.HFFormatError as e:
            raise ExportError("--format=hf: %s" % e)
    if "keras_hub" in formats:
        try:
            keras_hub_format.check_exportable(config, vocab_info.kind, vocab_info.lower_case, task)
        except keras_hub_format.KerasHubFormatError as e:
            raise ExportError("--format=keras_hub: %s" % e)


def _write(staging, values, config, vocab_info, heads, run, source, metrics, formats, card):
    task = run.get("task") or "mlm"
    pooler_trained = heads["pooler_trained"] or task not in ("mlm", "unilm", "lm")   # or fine-tuned
    if "sentence_transformers" in formats and not pooler_trained:
        raise ExportError("--format=sentence_transformers: this run (task %s%s) never trained its pooler, "
                          "whose [CLS] vectors a sentence-transformers model gives: export a SimBERT "
                          "run (task simbert), or one trained with NSP." % (task, ", no NSP"
                                                                            if not heads["nsp"] else ""))
    google_checkpoint.write_checkpoint(values, os.path.join(staging, CHECKPOINT))
    with open(os.path.join(staging, BERT_CONFIG), "w") as f:
        json.dump(config.to_dict(), f, indent=2)
    vocab_file = VOCAB_FILES[vocab_info.kind]
    with open(os.path.join(staging, vocab_file), "wb") as f:
        f.write(fs.read_bytes(vocab_info.path))
    if "hf" in formats:
        try:
            hf_format.write_hf_dir(os.path.join(staging, formats["hf"]), values, config,
                                   os.path.join(staging, vocab_file), vocab_info.lower_case,
                                   task, card=card)
            if "sentence_transformers" in formats:
                hf_format.write_sentence_transformers(os.path.join(staging, formats["hf"]), values, config)
        except hf_format.HFFormatError as e:
            raise ExportError("--format=hf: %s" % e)
    if "keras_hub" in formats:
        try:
            keras_hub_format.write_keras_hub_dir(os.path.join(staging, formats["keras_hub"]), values,
                                                 config, os.path.join(staging, vocab_file),
                                                 vocab_info.lower_case, task, card=card)
        except keras_hub_format.KerasHubFormatError as e:
            raise ExportError("--format=keras_hub: %s" % e)
    files = {name: {"bytes": os.path.getsize(os.path.join(staging, name)),
                    "sha256": fs.sha256(os.path.join(staging, name))}
             for name in _file_names(staging)}
    manifest = ExportManifest(
        source=source, task=run.get("task"), heads=heads, bert_config=config.to_dict(),
        vocab=dataclasses.replace(vocab_info, path=None, file=vocab_file, source_path=vocab_info.path),
        variables={name: list(value.shape) for name, value in sorted(values.items())},
        files=files, metrics=metrics, run_config=run, formats=formats)
    with open(os.path.join(staging, EXPORT_MANIFEST), "w") as f:
        json.dump(manifest.to_json(), f, indent=2)
    return manifest


def _existing_export(output):
    """The manifest of the export already at `output`; None if there is nothing there."""
    if gcs.is_gcs(output):
        names = gcs.list_names(output)
        if not names:
            return None
        if EXPORT_MANIFEST not in names:
            raise ExportError("%s holds %d object(s) but no %s (an interrupted upload, or other "
                              "files). Choose another --output, or delete it (`gcloud storage rm -r "
                              "%s`)." % (output, len(names), EXPORT_MANIFEST, output))
        url = output.rstrip("/") + "/" + EXPORT_MANIFEST
        return ExportManifest.parse(gcs.read_bytes(url), url)
    if "://" in output:
        raise ExportError("--output %s: exports go to a local directory or gs://." % output)
    if not os.path.exists(output):
        return None
    if not os.path.isdir(output):
        raise ExportError("--output %s is a file, not a directory." % output)
    if not os.listdir(output):
        return None
    if not os.path.exists(os.path.join(output, EXPORT_MANIFEST)):
        raise ExportError("%s is not empty and holds no export (no %s). Choose another --output."
                          % (output, EXPORT_MANIFEST))
    return ExportManifest.load(output)


def _same_source(a, b):
    return all(a.get(k) == b.get(k) for k in ("step", "ema", "index_sha256"))


def _staging_dir(output):
    if gcs.is_gcs(output):
        return tempfile.mkdtemp(prefix="export-")
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    # A sibling of the output: same filesystem, so publishing is one atomic rename.
    return tempfile.mkdtemp(prefix=".%s.tmp-" % os.path.basename(os.path.abspath(output)), dir=parent)


def _file_names(directory):
    """The files under `directory`, as sorted '/'-separated paths relative to it."""
    names = []
    for parent, _, files in os.walk(directory):
        relative = os.path.relpath(parent, directory)
        names += [name if relative == "." else "%s/%s" % (relative.replace(os.sep, "/"), name)
                  for name in files]
    return sorted(names)


def _publish(staging, output):
    names = _file_names(staging)
    if gcs.is_gcs(output):
        # The manifest goes last: an export whose manifest is present is complete.
        names.remove(EXPORT_MANIFEST)
        gcs.upload_directory(staging, output, names + [EXPORT_MANIFEST])
        return
    if os.path.isdir(output):
        os.rmdir(output)   # empty (checked before any work); rename cannot replace it otherwise
    os.chmod(staging, 0o755)   # mkdtemp made it private
    os.rename(staging, output)
