"""Raw text to pretraining TFRecords, and the tf.data loader that feeds them.

    python -m launch.build_data --config=configs/data/base.py --input=a.txt --output_dir=data/x  # or:
    manifest = builder.build(builder.BuildConfig(output_dir="data/x", vocab="vocab.txt",
                                                 source=sources.SourceConfig(("a.txt",))))
    dataset = loader.make_dataset(manifest, batch_size=256, seed=1, epoch=0)

The modules, from the text in to the batches out:
    sources           streams documents out of text, JSON lines, .gz, globs, gs:// and TFDS (`SourceConfig`)
    mixing            several corpora in one build: weights and exact deduplication (`resolve`, `stream`)
    tasks             UniLM, SimBERT and causal-LM samples: items -> record columns (`TaskConfig`)
    google_text       Google's BasicTokenizer rules in plain Python (`is_cjk`, `cjk_mask`, `CJK_RANGES`)
    google_wordpiece  Google's BasicTokenizer + WordPiece, computed fast and exactly: the encoders
    unicode_parity    where HF tokenizers' Unicode tables disagree with Google's, and the patch (`rules`)
    _unicode_parity   the patch's generated tables
    tokenizer         one interface over vocab.txt and SentencePiece .model files (`load_tokenizer`)
    vocab             builds a vocabulary from a corpus (`build_wordpiece`, `build_sentencepiece`)
    segmenter         Chinese word segmentation for whole-word masking (`Segmenter`, `SEGMENTERS`)
    instances         tokenized documents -> fixed-length MLM instances, packed or pairs (`make_instances`)
    masking           whole-word MLM masking, in NumPy for the builder and in TF for the loader (`mask_tf`)
    schema            the record layouts, the UniLM row and row padding (`features`, `unilm_row`)
    labelled          labelled text in CSV files, checked line by line (`read_labelled_csv`)
    tfrecord          TFRecord files of tf.train.Examples, written without TensorFlow (`RecordFile`)
    chunks            the work on one chunk of documents, in a worker process (`ChunkProcessor`)
    workers           worker processes that never outlive the process that started them
    progress          the build's progress line (`Progress`)
    build_config      a build's settings, their defaults and checks (`BuildConfig`, `validate`)
    build_state       a build's plan of shards and its state file, which resumes it (`Plan`, `BuildState`)
    build_steps       the steps both engines share: check, count, fingerprint, manifest, summary
    builder           the local engine: worker processes on this machine (`build`)
    beam_build        the Apache Beam engine, the same bytes from a laptop to Dataflow (`build`)
    manifest          manifest.json: what a data directory holds, checked and verified (`Manifest`)
    loader            batches for training, masks drawn in the graph each epoch (`make_dataset`)
    sample_corpus     a small real-text corpus made from the project itself (quickstart, tests)

Importing this package has no side effects and does not import TensorFlow.
"""
