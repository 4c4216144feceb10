"""The fine-tuning tokenizer: bert4keras's interface (`encode(first, second, maxlen)` ->
(token_ids, segment_ids)) over the project's Google-parity tokenizers, and `sequence_padding`.

    from downstream import load_finetune_tokenizer, sequence_padding

    tokenizer = load_finetune_tokenizer("exports/base/100000/vocab.txt")
    token_ids, segment_ids = tokenizer.encode("first text", "second text", maxlen=128)
    batch = sequence_padding([token_ids])           # int32 [1, len(token_ids)]
"""

import os
from typing import List, Optional, Sequence

from data_pipeline import schema
from data_pipeline import tokenizer as tokenization
from data_pipeline.google_text import is_cjk
from pretrain.export_dir import ExportManifest
from pretrain.google_checkpoint import CheckpointError


class FinetuneTokenizer:
    """bert4keras's tokenizer interface over the project's Google-parity tokenizers.

    encode(first, second=None, maxlen=None) -> (token_ids, segment_ids) with [CLS] and [SEP].
    """

    def __init__(self, base: tokenization.Tokenizer):
        self.base = base
        self.special_ids = base.special_ids
        self.vocab_size = base.vocab_size

    def token_to_id(self, token: str) -> Optional[int]:
        return self.base.token_to_id(token)

    def id_to_token(self, index: int) -> str:
        return self.base.id_to_token(index)

    def tokenize(self, text: str, maxlen: Optional[int] = None) -> List[str]:
        return [self.id_to_token(i) for i in self.encode(text, maxlen=maxlen)[0]]

    def encode(self, first_text: str, second_text: Optional[str] = None, maxlen: Optional[int] = None):
        first = self.base.encode(first_text)
        second = self.base.encode(second_text) if second_text is not None else []
        if maxlen is not None:
            budget = maxlen - 2 - (1 if second_text is not None else 0)
            while len(first) + len(second) > max(budget, 0):   # cut the longer text's end first
                (first if len(first) >= len(second) else second).pop()
        cls, sep = self.special_ids.cls, self.special_ids.sep
        token_ids = [cls] + first + [sep]
        segment_ids = [0] * len(token_ids)
        if second_text is not None:
            token_ids += second + [sep]
            segment_ids += [1] * (len(second) + 1)
        return token_ids, segment_ids

    def decode(self, ids: Sequence[int]) -> str:
        specials = set(self.special_ids.as_dict().values())
        tokens = [self.id_to_token(int(i)) for i in ids if int(i) not in specials]
        if self.base.kind == "sentencepiece":
            return "".join(tokens).replace("\u2581", " ").strip()
        text = " ".join(tokens).replace(" ##", "")
        # CJK characters are tokens of their own; they are written without spaces between them.
        return "".join(ch for i, ch in enumerate(text) if not (
            ch == " " and 0 < i < len(text) - 1
            and is_cjk(ord(text[i - 1])) and is_cjk(ord(text[i + 1]))))


def load_finetune_tokenizer(vocab_path: str, lower_case: Optional[bool] = None) -> FinetuneTokenizer:
    """A `FinetuneTokenizer` over a vocab.txt or SentencePiece model. lower_case defaults to the value an
    export manifest beside the file records, else to the tokenizer's default (WordPiece: True)."""
    if lower_case is None:
        lower_case = _recorded_lower_case(vocab_path)
    try:
        return FinetuneTokenizer(tokenization.load_tokenizer(vocab_path, lower_case=lower_case))
    except tokenization.VocabError as e:
        raise CheckpointError(str(e))


# The names of the first release (README examples and user code still call them).
Tokenizer = FinetuneTokenizer
load_tokenizer = load_finetune_tokenizer

# bert4keras's `sequence_padding` (int32 [len(sequences), length]), defined with the row layouts.
sequence_padding = schema.sequence_padding


def _recorded_lower_case(vocab_path):
    manifest = ExportManifest.load(os.path.dirname(vocab_path))
    return manifest.vocab.lower_case if manifest else None
