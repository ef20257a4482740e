"""Request items sized to a stated token count with the metric's own tokenizer.

Sizes are counted exactly as the server counts them (`service.runtime.encoding`): the text pair
the metric's spec builds from the item, plus the tokenizer's special tokens, before any
windowing. Items start from the customer's test-set rows when given (their query and response,
their context grown with other rows' contexts or cut at a token boundary), otherwise from the
seeded English generator. Every item is re-counted after sizing; one that misses its target by
more than the tolerance is an error, never silently sent.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from loadtest.requirements import LoadPoint, TokenDistribution
from loadtest.textgen import EnglishTextGenerator
from service.runtime.encoding import MIN_CONTEXT_TOKENS, ItemTooLongError, PairEncoder, segment_text
from service.runtime.spec import InputField, LongInputMode

Item = dict[str, str]
MIN_GROWN_TOKENS = 8  # the sized field keeps at least this many tokens when the rest is cut


class PayloadError(ValueError):
    """Items of the requested size cannot be built (e.g. a target below the template's specials)."""


@dataclass(frozen=True)
class Payload:
    item: Item
    tokens: int  # the item's text pair with specials (the stated size)
    model_tokens: int  # what the model runs over it: the sum over its windows


def tolerance(target: int) -> int:
    """How far a built item may miss its target: 1% or 2 tokens, whichever is larger."""
    return max(2, math.ceil(target * 0.01))


def draw_sizes(point: LoadPoint, dist: TokenDistribution, count: int, rng: random.Random) -> list[int]:
    """Token targets for `count` items at one load level (mean = the level's input_tokens)."""
    if dist.kind == "fixed":
        return [point.input_tokens] * count
    mu = math.log(point.input_tokens) - dist.sigma**2 / 2  # so the mean is input_tokens
    return [
        min(dist.max_tokens, max(dist.min_tokens, round(rng.lognormvariate(mu, dist.sigma))))
        for _ in range(count)
    ]


class PayloadBuilder:
    """Builds items of a given token count from source rows or generated English."""

    def __init__(
        self, encoder: PairEncoder, rows: Sequence[Mapping[str, str]] | None = None, seed: int = 0
    ) -> None:
        self.encoder = encoder
        self.spec = encoder.spec
        self.rng = random.Random(seed)
        self.generator = EnglishTextGenerator(seed)
        self.rows = [dict(r) for r in rows or []]
        pair = self.spec.text_pair
        self.sized_field = (pair.second or pair.first)[-1].value  # the field the policy may cut
        self.specials = encoder.template.pair_specials if pair.second else encoder.template.single_specials

    # -- counting ------------------------------------------------------------------------------

    def _tokens(self, text: str) -> int:
        return len(self.encoder.tokenizer.encode(text, add_special_tokens=False).ids) if text else 0

    def count(self, item: Mapping[str, str]) -> int:
        """Tokens of the item's text pair with specials, before windowing (the server's count)."""
        pair = self.spec.text_pair
        first = self._tokens(segment_text(item, pair.first))
        second = self._tokens(segment_text(item, pair.second)) if pair.second else 0
        return first + second + self.specials

    def _cut(self, text: str, tokens: int) -> str:
        """The longest prefix of `text` holding `tokens` tokens, cut at a token boundary."""
        if tokens <= 0:
            return ""
        offsets = self.encoder.tokenizer.encode(text, add_special_tokens=False).offsets
        if tokens >= len(offsets):
            return text
        return text[: offsets[tokens - 1][1]]

    # -- sources -------------------------------------------------------------------------------

    def _base(self) -> Item:
        if self.rows:
            row = self.rng.choice(self.rows)
            return {f.value: (row.get(f.value) or "").strip() for f in InputField}
        p = self.generator.passage()
        return {"input": p.question, "output": p.answer, "context": p.context}

    def _filler(self) -> Iterator[str]:
        """Endless text to grow the sized field with: other rows' fields, else generated prose."""
        if self.rows:
            while True:
                row = self.rng.choice(self.rows)
                text = (row.get(self.sized_field) or "").strip()
                if text:
                    yield text
        else:
            yield from self.generator.sentences()

    def _grow(self, text: str, tokens: int) -> str:
        filler = self._filler()
        parts = [text] if text else []
        have = self._tokens(text)
        for _ in range(100_000):
            if have >= tokens:
                break
            piece = next(filler)
            parts.append(piece)
            have += self._tokens(piece)
        return self._cut(" ".join(parts), tokens)

    # -- sizing --------------------------------------------------------------------------------

    def build(self, target: int) -> Payload:
        """One item of `target` tokens (within `tolerance(target)`)."""
        if target < self.specials + 2:
            raise PayloadError(f"{target} tokens is below the smallest item ({self.specials + 2} tokens)")
        spec = self.spec
        if spec.long_input.mode == LongInputMode.REJECT and target > spec.max_tokens:
            raise PayloadError(
                f"{target} tokens exceed {spec.name}'s max_tokens {spec.max_tokens} and its long-input"
                " policy is reject: the server would refuse every such item"
            )
        item = self._base()
        field = self.sized_field
        limit = target - (max(MIN_GROWN_TOKENS, target // 4) if spec.text_pair.second else 1)
        if spec.text_pair.second:  # leave the context the room the server's windows need
            limit = min(limit, spec.max_tokens - MIN_CONTEXT_TOKENS)
        self._shrink_fixed(item, max(limit, self.specials + 1))
        for _ in range(4):  # tokenizers may merge across a cut; re-count and correct
            rest = self.count({**item, field: ""})
            item[field] = self._grow(item[field], max(target - rest, 1))
            got = self.count(item)
            if got == target:
                break
            item[field] = self._grow(item[field], max(self._tokens(item[field]) + target - got, 1))
            if self.count(item) == target:
                break
        got = self.count(item)
        if abs(got - target) > tolerance(target):
            raise PayloadError(f"could not size an item to {target} tokens (got {got})")
        item = {k: v for k, v in item.items() if v}
        encoded = self.encoder.try_encode_many([item])[0]
        if isinstance(encoded, ItemTooLongError):
            raise PayloadError(f"a {target}-token item would be refused by the server: {encoded}")
        return Payload(item=item, tokens=got, model_tokens=encoded.tokens)

    def _shrink_fixed(self, item: Item, limit: int) -> None:
        """Cut the fields that are not sized (query first, then response) until they fit `limit`."""
        order = [f for f in (InputField.INPUT, InputField.OUTPUT) if f.value != self.sized_field]
        for field in order:
            name = field.value
            excess = self.count({**item, self.sized_field: ""}) - limit
            if excess <= 0:
                return
            floor = 1 if field in self.spec.required_fields else 0
            keep = max(self._tokens(item[name]) - excess, floor)
            item[name] = self._cut(item[name], keep)

    def pool(self, targets: Sequence[int]) -> list[Payload]:
        return [self.build(t) for t in targets]


def summarize(payloads: Sequence[Payload]) -> dict[str, float]:
    sizes = sorted(p.tokens for p in payloads)
    if not sizes:
        return {"items": 0}
    return {
        "items": len(sizes),
        "mean_tokens": round(sum(sizes) / len(sizes), 1),
        "min_tokens": sizes[0],
        "p50_tokens": sizes[len(sizes) // 2],
        "max_tokens": sizes[-1],
    }
