"""The tokenizer as the encoder needs it: loaded without its own padding and truncation, its
pad token, and the special tokens it puts around one or two segments (its pair template).

`service.runtime.encoding` builds every window from these. The template is read off the
tokenizer's own post-processor (e.g. BERT's [CLS] a [SEP] b [SEP]), so no table of model
families is kept here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer


@dataclass(frozen=True)
class PairTemplate:
    """Special tokens around one or two segments, read off the tokenizer's post-processor."""

    single: tuple[tuple[int, ...], tuple[int, ...]]  # (prefix, suffix) ids
    pair: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # (prefix, middle, suffix)
    pair_type_ids: tuple[int, int, int, int, int]  # type of prefix, a, middle, b, suffix

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> PairTemplate:
        a = tokenizer.encode("a", add_special_tokens=False)
        b = tokenizer.encode("b", add_special_tokens=False)
        if not a.ids or not b.ids:
            raise ValueError("tokenizer maps plain letters to no tokens; cannot read its template")
        one = tokenizer.encode("a", add_special_tokens=True)
        two = tokenizer.encode("a", "b", add_special_tokens=True)
        i = _find(one.ids, a.ids, 0)
        single = (tuple(one.ids[:i]), tuple(one.ids[i + len(a.ids) :]))
        ia = _find(two.ids, a.ids, 0)
        ib = _find(two.ids, b.ids, ia + len(a.ids))
        end_b = ib + len(b.ids)
        pair = (
            tuple(two.ids[:ia]),
            tuple(two.ids[ia + len(a.ids) : ib]),
            tuple(two.ids[end_b:]),
        )
        types = two.type_ids
        pair_type_ids = (
            types[0] if ia else types[ia],  # prefix
            types[ia],  # first segment
            types[ia + len(a.ids)],  # middle (or the second segment when there is none)
            types[ib],  # second segment
            types[-1],  # suffix (or the second segment when there is none)
        )
        return cls(single=single, pair=pair, pair_type_ids=pair_type_ids)

    @property
    def pair_specials(self) -> int:
        return sum(len(p) for p in self.pair)

    @property
    def single_specials(self) -> int:
        return sum(len(p) for p in self.single)


def _find(haystack: Sequence[int], needle: Sequence[int], start: int) -> int:
    for i in range(start, len(haystack) - len(needle) + 1):
        if list(haystack[i : i + len(needle)]) == list(needle):
            return i
    raise ValueError("tokenizer post-processor reorders segments; unsupported template")


def load_tokenizer(path: Path) -> Tokenizer:
    """A tokenizer with its own padding and truncation off: the encoder decides both."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def pad_token_id(tokenizer: Tokenizer) -> int:
    for token in ("[PAD]", "<pad>", "<PAD>"):
        found = tokenizer.token_to_id(token)
        if found is not None:
            return int(found)
    return 0
