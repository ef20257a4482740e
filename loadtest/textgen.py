"""A seeded generator of plain English passages, questions and answers for load-test payloads.

Used when the metric's owner gives no test set. The text is ordinary English prose (so a real
WordPiece/BPE tokenizer splits it as it would split traffic, unlike random characters), the same
seed always gives the same text, and any length can be drawn.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

PEOPLE = [
    "Maria Lopez",
    "the city council",
    "Dr. Chen",
    "the research team",
    "a local farmer",
    "the museum curator",
    "the company",
    "the river authority",
    "Professor Adeyemi",
    "the school board",
    "the harbour master",
    "a group of volunteers",
]
PLACES = [
    "Lisbon",
    "the northern valley",
    "Oslo",
    "the old harbour",
    "Nairobi",
    "the coastal town",
    "Montreal",
    "the mountain village",
    "Kyoto",
    "the river delta",
    "Santiago",
    "the island",
]
THINGS = [
    "a new bridge",
    "the annual report",
    "a water treatment plant",
    "the library",
    "a solar farm",
    "the railway line",
    "a vaccine trial",
    "the festival",
    "a wind turbine",
    "the archive",
    "a community garden",
    "the observatory",
]
VERBS = [
    "opened",
    "approved",
    "completed",
    "announced",
    "inspected",
    "funded",
    "rebuilt",
    "studied",
    "expanded",
    "delayed",
    "restored",
    "designed",
]
REASONS = [
    "after two years of planning",
    "despite heavy rain in the spring",
    "with support from the regional government",
    "to reduce traffic in the centre",
    "because demand had doubled",
    "following a public consultation",
    "as part of a long-term climate plan",
    "after the earlier design failed an inspection",
]
DETAILS = [
    "The project cost {n} million euros and employed {m} people.",
    "Officials said the work would last until {year}.",
    "About {m} residents attended the first public meeting.",
    "The site lies {n} kilometres from the nearest station.",
    "Records show that a similar attempt was made in {year}.",
    "Critics argued that the budget of {n} million was too small.",
    "The first phase finished in {year}, ahead of schedule.",
    "Local newspapers reported that {m} volunteers helped on weekends.",
]


@dataclass(frozen=True)
class Passage:
    """One synthetic item: a context, a question about it, and an answer taken from it."""

    context: str
    question: str
    answer: str


class EnglishTextGenerator:
    """Deterministic English text: `sentences()` never ends, `passage()` gives a QA item."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def sentence(self) -> str:
        r = self._rng
        if r.random() < 0.4:
            return r.choice(DETAILS).format(
                n=r.randint(2, 900), m=r.randint(12, 4000), year=r.randint(1950, 2030)
            )
        who, did, what = r.choice(PEOPLE), r.choice(VERBS), r.choice(THINGS)
        return f"In {r.choice(PLACES)}, {who} {did} {what} {r.choice(REASONS)}."

    def sentences(self) -> Iterator[str]:
        while True:
            yield self.sentence()

    def passage(self, sentences: int = 6) -> Passage:
        body = [self.sentence() for _ in range(max(sentences, 1))]
        answer = self._rng.choice(body)
        words = answer.rstrip(".").split()
        question = f"What does the text say about {' '.join(words[-4:])}?"
        return Passage(context=" ".join(body), question=question, answer=answer)
