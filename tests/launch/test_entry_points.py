"""The data entry points from the command line: they record how their output was made."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(*args, check=True):
    done = subprocess.run([sys.executable, "-m"] + list(args), cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0 or not check, done.stderr[-2000:]
    return done


def test_build_vocab_and_build_data_record_their_command_lines(corpus_dir, tmp_path):
    corpus = str(corpus_dir / "en.txt")
    vocab = str(tmp_path / "vocab" / "vocab.txt")
    _run("launch.build_vocab", "--input=%s" % corpus, "--output=%s" % vocab, "--vocab_size=500")
    data = str(tmp_path / "data")
    _run("launch.build_data", "--input=%s" % corpus, "--vocab=%s" % vocab, "--output_dir=%s" % data,
         "--seq_len=32", "--num_shards=2", "--noprogress")
    for directory, line in ((tmp_path / "vocab", "-m launch.build_vocab --input=%s --output=%s --vocab_size=500"
                             % (corpus, vocab)),
                            (tmp_path / "data", "-m launch.build_data --input=%s --vocab=%s --output_dir=%s "
                             "--seq_len=32 --num_shards=2 --noprogress" % (corpus, vocab, data))):
        assert line in (directory / "command.txt").read_text()
    assert os.path.exists(os.path.join(data, "manifest.json"))   # the build's resolved settings
    helptext = _run("launch.build_data", "--help", check=False).stdout   # absl exits 1 after help
    for flag in ("--input", "--vocab", "--output_dir", "--task", "--seq_len", "--mode", "--num_workers"):
        assert flag in helptext
