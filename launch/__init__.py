"""The command lines: the only modules that read flags. Each is `python -m launch.<name>`, and
`--help` lists its flags.

The entry points, in the order of a project:
    quickstart           the main job end to end on the project's own text, offline, on CPU
    build_vocab          a WordPiece vocab.txt or a SentencePiece model from a corpus
    build_data           shards and manifest.json from a corpus (local processes or Apache Beam)
    pretrain             trains a config (configs/*.py) on shards, resuming from its workdir
    export               a run's checkpoint as an export directory in Google's layout
    finetune_classifier  a text classifier on an export, with its held-out accuracy
    finetune_seq2seq     UniLM seq2seq fine-tuning on an export, saved as a new export and scored
    generate             text from a UniLM or LM export, or paraphrases from a SimBERT export
    run                  starts, supervises and restarts the workers of a multi-worker job (torchrun-style)
    tpu_vm               creates a Cloud TPU VM or pod slice, sets it up, runs, shows logs, deletes

What they share:
    common               the command record, a quiet TensorFlow import, one-line flag errors
    rendezvous           how the launchers of several nodes find each other (`launch.run`)
    supervisor           one node's worker processes: start, forward output, restart (`launch.run`)
    tpu_slices           Cloud TPU slices, zones and software (`launch.tpu_vm`)
    tpu_host             what `launch.tpu_vm setup` runs on every host of a slice

The manual is docs/ (docs/README.md indexes it); the operator's guide is WORKSPACE.md.
"""
