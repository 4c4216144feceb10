"""Data-build configs (`launch.build_data --config=configs/data/<name>.py`): base.py holds the
defaults (those of data_pipeline.build_config.BuildConfig); each other file is a recipe."""
