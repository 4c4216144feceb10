"""Moved to `downstream.generation`; this name stays for one release."""
from pretrain._moved import alias

alias(__name__, "downstream.generation")
