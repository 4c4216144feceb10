import numpy as np
import tensorflow as tf

from data_pipeline import masking
from data_pipeline.chunks import ChunkProcessor, ChunkSettings
from data_pipeline.instances import InstanceConfig
from data_pipeline.tokenizer import SpecialIds


def _real_batch(corpus_dir, wordpiece_vocab):
    """Packed instances of the English sample text: ids and word starts, padded with [PAD]."""
    settings = ChunkSettings(vocab=wordpiece_vocab, lower_case=True, instance=InstanceConfig(seq_len=64),
                             masking=masking.MaskingConfig(), record_format="dynamic", dupe_factor=1,
                             seed=1, eval_fraction=0.0, docs_per_chunk=10**6, segmenter=None)
    proc = ChunkProcessor(settings)
    docs = [[l for l in block.split("\n") if l] for block in
            open(corpus_dir / "en.txt", encoding="utf-8").read().split("\n\n")]
    from data_pipeline.instances import InstanceStats, make_instances
    import random
    tokens, spans = proc._tokenize(docs)
    layout = make_instances(spans, settings.instance, proc.specials.cls, proc.specials.sep,
                            random.Random(0), InstanceStats())
    ids, starts, _ = layout.matrices(tokens, settings.instance.seq_len, proc.specials.pad)
    return proc, ids, starts


def test_numpy_and_tensorflow_masks_are_identical(corpus_dir, wordpiece_vocab):
    proc, ids, starts = _real_batch(corpus_dir, wordpiece_vocab)
    ex = np.arange(len(ids), dtype=np.int64) * 7919 + (5 << 32)
    kw = dict(seed=3, special_ids=proc.specials, replacement_ids=proc.replacement_ids,
              config=masking.MaskingConfig())
    for epoch in (0, 1, np.arange(len(ids)) % 3):
        a = masking.mask_np(ids, starts, ex, epoch=epoch, **kw)
        b = masking.mask_tf(ids, starts, ex, epoch=tf.constant(epoch, tf.int64), **kw)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key].numpy(), err_msg=key)


def test_mask_statistics_on_real_text(corpus_dir, wordpiece_vocab):
    proc, ids, starts = _real_batch(corpus_dir, wordpiece_vocab)
    sp = proc.specials
    reps = np.concatenate([ids] * 20)
    st = np.concatenate([starts] * 20)
    ex = np.arange(len(reps), dtype=np.int64)
    out = masking.mask_np(reps, st, ex, seed=0, epoch=0, special_ids=sp,
                          replacement_ids=proc.replacement_ids, config=masking.MaskingConfig())
    pos, w = out["masked_lm_positions"], out["masked_lm_weights"] > 0
    real = (reps != sp.pad).sum(1)
    budget = np.minimum(20, np.maximum(1, np.round(real * 0.15)))
    # Budget reached almost always; never exceeded.
    assert (w.sum(1) <= budget).all() and (w.sum(1) == budget).mean() > 0.97
    assert abs(w.sum() / real.sum() - 0.15) < 0.01
    rows = np.nonzero(w)[0]
    p = pos[w]
    orig = reps[rows, p]
    assert not np.isin(orig, [sp.cls, sp.sep, sp.pad]).any()        # specials never masked
    assert (out["masked_lm_ids"][w] == orig).all()
    new = out["input_ids"][rows, p]
    frac_mask, frac_same = (new == sp.mask).mean(), (new == orig).mean()
    assert abs(frac_mask - 0.8) < 0.03 and abs(frac_same - 0.1) < 0.03
    random_tokens = new[(new != sp.mask) & (new != orig)]
    assert np.isin(random_tokens, proc.replacement_ids).all()       # never a special/reserved id
    # Whole words: a masked word start implies all its ## pieces are masked, and vice versa.
    selected = np.zeros_like(reps, bool)
    selected[rows, p] = True
    maskable = ~np.isin(reps, [sp.cls, sp.sep, sp.pad])
    continuation = maskable & (st == 0)
    prev = np.roll(selected, 1, axis=1)
    assert (selected[continuation] == prev[continuation]).all()
    # Positions sorted, padding zero.
    assert all((np.diff(r[m]) > 0).all() for r, m in zip(pos, w))
    assert (pos[~w] == 0).all() and (out["masked_lm_ids"][~w] == 0).all()


def test_one_decision_per_word():
    sp = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
    ids = np.array([[2] + list(range(10, 70)) + [3]])
    starts = np.zeros_like(ids)
    starts[0, 1::4] = 1   # words of 4 pieces
    ids = np.repeat(ids, 500, axis=0)
    starts = np.repeat(starts, 500, axis=0)
    out = masking.mask_np(ids, starts, np.arange(500), seed=1, epoch=0, special_ids=sp,
                          replacement_ids=np.arange(100, 200), config=masking.MaskingConfig())
    new = np.take_along_axis(out["input_ids"], out["masked_lm_positions"], 1).reshape(500, -1, 4)
    kinds = np.where(new == 4, 0, np.where(new >= 100, 1, 2))
    assert (kinds == kinds[:, :, :1]).all()  # all pieces of a word share the decision
    assert (out["masked_lm_weights"].sum(1) == 8).all()  # round(62*.15)=9 -> two 4-piece words
