"""Raw text to pretraining TFRecords, and the tf.data loader that feeds them.

Public API:
  tokenizer.load_tokenizer(path)          WordPiece vocab.txt (Google-exact) or SentencePiece .model
  vocab.build_wordpiece / build_sentencepiece
  builder.build(builder.BuildConfig(...)) streaming, parallel, resumable shard builder
  loader.make_dataset(data_dir, ...)      batches with dynamic (in-graph) or static masks
  manifest.Manifest.load(data_dir)        what a data directory holds; .check and .verify it
  manifest.Manifest.google(files, ...)    describes records written by google-research/bert
  segmenter.SEGMENTERS                    Chinese word segmenters for whole-word masking
  google_text.is_cjk / cjk_mask / CJK_RANGES  the CJK ideographs Google's tokenizer splits off
Importing this package has no side effects and does not import TensorFlow.
"""
