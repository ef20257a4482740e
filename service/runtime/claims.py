"""A response as claims: its sentences, for claim-by-claim scoring and the weakest-claim evidence.

Splitting is deliberately plain (after ., ! or ? followed by whitespace) and deterministic, so
training, evaluation and serving cut the same claims. Fragments shorter than a few words
("Yes.", "Dr.", "No.") join a neighbour rather than stand as claims of their own.
"""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences(text: str) -> list[str]:
    """The text's sentences, split after ., ! or ? followed by whitespace; blank ones dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def split_claims(text: str, *, max_claims: int, min_words: int) -> list[str]:
    """At most `max_claims` claims of `text`, each of at least `min_words` words where possible.

    A short sentence joins the claim before it (or the next one, when it comes first); claims
    past `max_claims` join the last claim. A text without sentences is one claim.
    """
    claims: list[str] = []
    for sentence in sentences(text):
        if claims and (len(sentence.split()) < min_words or len(claims[-1].split()) < min_words):
            claims[-1] = f"{claims[-1]} {sentence}"
        else:
            claims.append(sentence)
    if len(claims) > max_claims:
        claims[max_claims - 1 :] = [" ".join(claims[max_claims - 1 :])]
    return claims or [text]
