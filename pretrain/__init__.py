"""BERT-family pretraining on TensorFlow (model, heads, optimizers, training loop): issue #4 onwards."""
