"""A stand-in for the optional `tokenizers` package (not installed here) with the API trainer/corpus.py uses:
ids 60,000 + each word's length, end-of-text 69,999, a 70,000-id vocabulary. `install(monkeypatch)` makes
`import tokenizers` return it."""

import sys
import types


class FakeTokenizer:
    @staticmethod
    def from_file(path):
        return FakeTokenizer()

    def get_vocab_size(self):
        return 70_000

    def token_to_id(self, token):
        return {"<|endoftext|>": 69_999}.get(token)

    def encode(self, text, add_special_tokens):
        return types.SimpleNamespace(ids=[60_000 + len(w) for w in text.split()])


def install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", types.SimpleNamespace(Tokenizer=FakeTokenizer))
