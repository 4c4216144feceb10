"""Experiment configs as code (`get_config()` returning an ml_collections.ConfigDict): issue #4 onwards."""
