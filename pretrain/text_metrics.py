"""Moved to `downstream.text_metrics`; this name stays for one release."""
from pretrain._moved import alias

alias(__name__, "downstream.text_metrics")
