"""Moved to `downstream.backbone` (the model) and `downstream.tokenization` (the tokenizer); this
name stays for one release."""
from pretrain._moved import alias

alias(__name__, "downstream.backbone", "downstream.tokenization")
