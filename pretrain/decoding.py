"""Moved to `downstream.decoding`; this name stays for one release."""
from pretrain._moved import alias

alias(__name__, "downstream.decoding")
