"""What TensorFlow prints when it starts (library and device probing) and our entry points hide
unless asked (--verbose, or the user's own TF_CPP_MIN_LOG_LEVEL). Written here independently of
launch/common.py's filter, so that a filter that lets a line through is caught."""

import os

_MARKERS = ("cuInit", "oneDNN", "absl::InitializeLog", "cuda drivers", "cpu_feature_guard",
            "rebuild TensorFlow")


def env_without_log_level(**extra):
    """The environment a user's shell gives: no TF_CPP_MIN_LOG_LEVEL (tests/conftest.py sets it)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(extra)
    return env


def start_up_noise(stderr: str):
    """The lines of `stderr` that are TensorFlow's start-up noise."""
    return [line for line in stderr.splitlines() if any(m in line for m in _MARKERS)]
