"""Moved to `downstream.seq2seq`; this name stays for one release."""
from pretrain._moved import alias

alias(__name__, "downstream.seq2seq")
