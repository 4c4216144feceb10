"""Tolerances for comparing two float32 computations of one value in a different way.

The same model run with another batch size, another sequence length, a key/value cache, XLA or
NumPy sums its products in another order: oneDNN picks its float32 kernels per shape and per CPU
(AVX2, AVX-512, AMX), XLA's CPU backend uses Eigen. float32 keeps about 7 significant digits; a
dot product over a few hundred terms, repeated through a few layers, keeps about 5-6 of them,
relative to the size of the values. Each tolerance below is that relative error (1e-5) times the
largest magnitude compared, with a margin of 10 or more over what any x86 CPU has shown:
batching moved a log-probability of a tiny model by 1.24e-5 on an Intel Xeon with AMX, against
a tolerance of 1e-5 that had held on AVX2 and AVX-512 machines.

Comparisons of one computation with itself (a resume against an uninterrupted run, a save and a
load) stay exact or near it in their own tests: they run the same kernels.
"""

# Log-probabilities over a vocabulary of a few thousand: |value| up to about 10.
LOGPROB = dict(rtol=0, atol=1e-4)
# Probabilities (softmax outputs, at most 1).
PROBABILITY = dict(rtol=0, atol=1e-5)
# Unit vectors, hidden states after a LayerNorm, tanh outputs: |value| about 1 or less.
UNIT = dict(rtol=0, atol=1e-5)


def score_tolerance(n_tokens):
    """For a sequence's score, the sum of its n per-token log-probabilities."""
    return LOGPROB["atol"] * max(1, n_tokens)
