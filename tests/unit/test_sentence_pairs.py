"""models.halueval.sentence_pairs: length-matched synthetic pairs that break the length bias."""

from __future__ import annotations

from models.halueval import HALLUCINATED, SUPPORTED, sentence_pairs
from service.runtime.evidence import words

CONTEXTS = [
    "The Eiffel Tower was completed in 1889 for the World Fair. It stands in Paris on the Champ de Mars.",
    "Jane Austen published Pride and Prejudice in 1813. The novel follows Elizabeth Bennet and Mr Darcy.",
    "The Danube flows through Vienna and Budapest before it reaches the Black Sea near Romania in 2850 km.",
    "Marie Curie won the Nobel Prize in Physics in 1903 with Pierre Curie and Henri Becquerel in Stockholm.",
]


def test_sentence_pairs_are_balanced_length_matched_and_swap_one_fact() -> None:
    rows = [{"context": c} for c in CONTEXTS]
    out = sentence_pairs(rows, pairs=4, seed=0, min_words=5)
    assert out and len(out) % 2 == 0
    for supported, hallucinated in zip(out[::2], out[1::2], strict=True):
        assert (supported["label"], hallucinated["label"]) == (SUPPORTED, HALLUCINATED)
        assert supported["context"] == hallucinated["context"]
        assert supported["output"] in supported["context"]  # copied verbatim
        assert hallucinated["output"] != supported["output"]
        assert abs(len(words(hallucinated["output"])) - len(words(supported["output"]))) <= 3
        context_words = set(words(supported["context"]))
        assert set(words(hallucinated["output"])) - context_words  # the swap is absent from the context
    assert out == sentence_pairs(rows, pairs=4, seed=0, min_words=5)  # seeded
