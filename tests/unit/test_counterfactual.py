"""models.counterfactual: pairs in one style, one fact apart, that stop style from predicting the label."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from models.counterfactual import (
    CHUNK_SENTENCES,
    HALLUCINATED,
    KINDS,
    LEAD_INS,
    RESPONSE_EDITS,
    SUPPORTED,
    Passage,
    counterfactual_pairs,
    entities,
    response_edits,
    retrieved_chunk,
    retrieved_chunks,
    sentences,
    snippet_answers,
    statement_template,
    weighted_kinds,
)
from service.runtime.evidence import content_words, words

PASSAGES = [
    Passage(
        "The Eiffel Tower was completed in 1889 for the World Fair in Paris. It stands on the Champ de Mars"
        " near the river Seine. It is not the tallest structure in France today.",
        "Where is the Eiffel Tower?",
        "Paris",
    ),
    Passage(
        "Pride and Prejudice was published by Jane Austen in 1813 in London. The novel follows Elizabeth"
        " Bennet and her four sisters at Longbourn. Readers can find it in every library in England.",
        "Who wrote Pride and Prejudice?",
        "Jane Austen",
    ),
    Passage(
        "The Danube flows through Vienna and Budapest before it reaches the Black Sea in Romania. It is"
        " 2850 km long and drains parts of 19 countries. Ships cannot pass the Iron Gates without locks."
    ),
    Passage(
        "Marie Curie won the Nobel Prize in Physics in 1903 with Pierre Curie in Stockholm. She won a"
        " second Nobel Prize in 1911, for chemistry. She was born in Warsaw and worked in Paris for most"
        " of her life.",
        "In which city was Marie Curie born?",
        "Warsaw",
    ),
]


def pairs_of(kind: str, n: int = 8, seed: int = 0) -> list[tuple[dict[str, str], dict[str, str]]]:
    rows = counterfactual_pairs(PASSAGES, pairs=n, seed=seed, kinds=[kind])
    assert rows, kind
    pairs = list(zip(rows[::2], rows[1::2], strict=True))
    for good, bad in pairs:
        assert (good["label"], bad["label"]) == (SUPPORTED, HALLUCINATED)
        assert good["context"] == bad["context"] and good["input"] == bad["input"]
        assert good["kind"] == bad["kind"] == kind and good["output"] != bad["output"]
        assert abs(len(words(good["output"])) - len(words(bad["output"]))) <= 4  # same length, same style
    return pairs


def _plain(output: str) -> str:  # without the assistant lead-in or the yes/no framing
    for lead in (*LEAD_INS, "Yes, ", "No, "):
        output = output.removeprefix(lead)
    return output[:1].upper() + output[1:]


def test_entity_swap_brings_in_a_name_absent_from_the_context() -> None:
    for good, bad in pairs_of("entity_swap"):
        context = set(words(good["context"]))
        assert set(words(_plain(good["output"]))) <= context
        assert set(words(bad["output"])) - context


def test_recombination_uses_only_words_of_the_context() -> None:
    for good, bad in pairs_of("recombination"):
        context = set(words(good["context"])) | set(words(" ".join(LEAD_INS)))
        assert set(words(bad["output"])) <= context  # every word is in the context; the statement is not
        assert _plain(good["output"]).lower() in good["context"].lower() or "(" in good["context"]


def test_number_change_keeps_years_as_years_and_is_absent_from_the_context() -> None:
    for good, bad in pairs_of("number_change"):
        old = set(re.findall(r"\d+", good["output"]))
        new = set(re.findall(r"\d+", bad["output"])) - old
        assert len(new) == 1
        (value,) = new
        assert value not in re.findall(r"\d+", good["context"])
        if any(1000 <= int(o) <= 2100 and len(o) == 4 for o in old - set(re.findall(r"\d+", bad["output"]))):
            assert len(value) == 4


def test_negation_reverses_one_auxiliary() -> None:
    for good, bad in pairs_of("negation"):
        a, b = _plain(good["output"]), _plain(bad["output"])
        assert a.replace("cannot", "can").replace(" not", "") == b.replace("cannot", "can").replace(
            " not", ""
        )
        assert ("not" in a.split() or "cannot" in a.split()) != ("not" in b.split() or "cannot" in b.split())


def _negated(output: str) -> bool:
    return bool({"not", "cannot", "No"} & set(output.replace(",", " ").split()))


def test_negation_puts_the_denial_on_either_side() -> None:
    """Reversing only affirmative sentences would teach that "not" and "No," mean hallucinated."""
    pairs = [pair for seed in range(12) for pair in pairs_of("negation", seed=seed)]
    faithful_denials = sum(_negated(good["output"]) for good, _ in pairs)
    hallucinated_denials = sum(_negated(bad["output"]) for _, bad in pairs)
    assert 0.3 < faithful_denials / (faithful_denials + hallucinated_denials) < 0.7, (
        faithful_denials,
        hallucinated_denials,
    )
    framed = [(g["output"], b["output"]) for g, b in pairs if g["output"].startswith(("Yes, ", "No, "))]
    assert {g.split(",")[0] for g, _ in framed} == {"Yes", "No"}  # a faithful "No, ..." exists
    for good, bad in framed:
        assert {good.split(",")[0], bad.split(",")[0]} == {"Yes", "No"}


def test_added_claim_appends_a_sentence_from_another_passage() -> None:
    for good, bad in pairs_of("added_claim"):
        first = _plain(good["output"]).split(". ")[0]
        assert _plain(bad["output"]).startswith(first)
        assert _plain(good["output"]).lower() in good["context"].lower().replace("(", "").replace(")", "")
        assert _plain(bad["output"]).lower() not in good["context"].lower()


def test_short_answers_and_answer_sentences_swap_the_right_answer() -> None:
    for good, bad in pairs_of("short_answer"):
        assert good["output"] in {"Paris", "Jane Austen", "Warsaw"}
        assert bad["output"].lower() not in good["context"].lower() and len(bad["output"].split()) <= 4
    answers = {p.query: p.answer for p in PASSAGES}
    for good, bad in pairs_of("answer_sentence"):
        answer = answers[good["input"]]
        assert answer in good["output"] and answer not in bad["output"]


def test_answer_statements_restate_the_question_with_the_answer() -> None:
    answers = {p.query: p.answer for p in PASSAGES}
    made = pairs_of("answer_statement")
    for good, bad in made:
        answer = answers[good["input"]]
        assert answer in good["output"] and answer not in bad["output"]
        assert good["output"].endswith(".") and good["output"][0].isupper()
        assert good["output"].lower() not in good["context"].lower()  # its own words, not a copy
    outputs = {_plain(good["output"]) for good, _ in made}
    assert {"Jane Austen wrote Pride and Prejudice.", "The Eiffel Tower is in Paris."} <= outputs


@pytest.mark.parametrize(
    ("question", "template"),
    [
        ("Who wrote Pride and Prejudice?", "{} wrote Pride and Prejudice."),
        ("Where is the Eiffel Tower?", "the Eiffel Tower is in {}."),
        ("When was the club founded?", "the club was founded in {}."),
        ("Which actress from Love Rain was known as Yoona?",
         "The actress from Love Rain that was known as Yoona was {}."),
        ("Jolanta Dickute's party includes which Russian-born businessman?",
         "Jolanta Dickute's party includes the Russian-born businessman, {}."),
        ("Q: In which {city} is it?", None),  # no rule fits; braces would not survive as a slot
        ("Are both films about Durham?", None),  # yes/no: the negation pairs answer those
    ],
)  # fmt: skip
def test_statement_templates(question: str, template: str | None) -> None:
    assert statement_template(question) == template


def test_kinds_take_turns_and_are_seeded() -> None:
    rows = counterfactual_pairs(PASSAGES, pairs=4, seed=1)
    assert len(rows) == 8 and len({r["kind"] for r in rows}) >= 3
    assert {r["kind"] for r in rows} <= set(KINDS)
    assert rows == counterfactual_pairs(PASSAGES, pairs=4, seed=1)
    assert rows != counterfactual_pairs(PASSAGES, pairs=4, seed=2)


def test_weighted_kinds_give_a_kind_more_turns_per_round() -> None:
    assert weighted_kinds({}) == KINDS
    kinds = weighted_kinds({"number_change": 3, "added_claim": 0})
    assert kinds[: len(KINDS) - 1] == tuple(k for k in KINDS if k != "added_claim")
    assert kinds[len(KINDS) - 1 :] == ("number_change", "number_change")
    with pytest.raises(ValueError, match="unknown counterfactual kind"):
        weighted_kinds({"rumour": 1})
    with pytest.raises(ValueError, match="weight 0"):
        weighted_kinds(dict.fromkeys(KINDS, 0))


def test_a_weighted_kind_gets_more_pairs() -> None:
    def made(number_change: int) -> Counter[str]:
        weights = dict.fromkeys(KINDS, 0) | {"entity_swap": 1, "number_change": number_change}
        rows = counterfactual_pairs(PASSAGES, pairs=4, seed=1, kinds=weighted_kinds(weights))
        return Counter(r["kind"] for r in rows[::2])

    assert made(1) == {"entity_swap": 2, "number_change": 2}  # every passage here states a number
    assert made(3) == {"entity_swap": 1, "number_change": 3}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("Readers in England love it. Ships cannot pass.", ["England"]),  # "Readers", "Ships" start sentences
        ("It was led by Kim Il-Sung from 1948.", ["Kim", "1948"]),  # no name inside a hyphenated word
        ("It costs 3.5 dollars, not 4.", ["4"]),  # no number inside a decimal
    ],
)
def test_entities_skip_sentence_starts_and_word_parts(text: str, names: list[str]) -> None:
    assert [m.group(0) for m in entities(text)] == names


def test_sentences_leave_out_cut_fragments() -> None:
    window = "went missing at the lake last week. The police searched the park for two days. And then the"
    assert sentences(window, min_words=4) == ["The police searched the park for two days."]


WRITTEN = [  # contexts with a faithful response written in other words (as HaluEval's are)
    Passage(
        "Arsenal beat Liverpool 4-1 at the Emirates on Saturday and moved up to second in the Premier"
        " League. Alexis Sanchez scored twice. Liverpool had won their previous 13 home games. Arsenal"
        " will play Burnley next, and Chelsea remain top by 7 points.",
        response="Arsenal moved up to second after a win over Liverpool on Saturday. Sanchez got two goals"
        " for the Gunners, who now face Burnley.",
    ),
    Passage(
        "Nolan directed Inception. Inception stars Leonardo DiCaprio. Inception was released in 2010.",
        "[Human]: Do you know who made Inception? Is it recent?",
        response="It was made by Christopher Nolan and it came out in 2010. DiCaprio is in it too.",
    ),
    Passage(
        "The Rockies play at Coors Field in Denver. Coors Field opened in 1995 and holds 50,144 fans."
        " The Rockies were founded in 1993.",
        "[Human]: Where do the Rockies play?",
        response="They play at Coors Field, in Denver, which can hold about 50,144 people.",
    ),
]


def response_pairs(seed: int = 0) -> list[tuple[dict[str, str], dict[str, str]]]:
    rows = response_edits([*WRITTEN, PASSAGES[0]], pairs=30, seed=seed)
    pairs = list(zip(rows[::2], rows[1::2], strict=True))
    for good, bad in pairs:
        assert (good["label"], bad["label"]) == (SUPPORTED, HALLUCINATED)
        assert good["context"] == bad["context"] and good["input"] == bad["input"]
        assert good["kind"] == bad["kind"] and good["kind"] in RESPONSE_EDITS
        assert good["output"] == next(p.response for p in WRITTEN if p.context == good["context"])
    return pairs


def _changed(good: str, bad: str) -> tuple[list[str], list[str]]:
    a, b = good.split(), bad.split()
    while a and b and a[0] == b[0]:
        a, b = a[1:], b[1:]
    while a and b and a[-1] == b[-1]:
        a, b = a[:-1], b[:-1]
    return a, b


def test_response_edits_keep_the_written_response_and_change_one_fact_the_context_holds() -> None:
    """The faithful member is the response as written; the other differs in one place, at a name or
    number the context holds (or a reversed statement naming one), never at an unsupported word."""
    pairs = [pair for seed in range(6) for pair in response_pairs(seed)]
    assert {good["kind"] for good, _ in pairs} == set(RESPONSE_EDITS)
    for good, bad in pairs:
        context = good["context"]
        removed, added = _changed(good["output"], bad["output"])
        assert removed or added
        if good["kind"] == "response_negation":
            assert {w.strip(".,") for w in added + removed} <= {
                "not",
                "cannot",
                "can",
                "is",
                "was",
                "are",
                "were",
            }
            continue
        old = " ".join(removed).strip(".,")
        new = " ".join(added).strip(".,")
        assert old and old.lower() in context.lower(), (old, good["output"])
        if good["kind"] == "response_swap":
            assert new.lower() not in context.lower(), (new, bad["output"])
        else:  # recombination: another name or number from the same context, of the same kind
            assert new.lower() in context.lower() and new.lower() not in good["output"].lower()
            assert new[0].isdigit() == old[0].isdigit()


def test_response_edits_are_seeded_and_skip_passages_without_a_response() -> None:
    assert response_edits(WRITTEN, pairs=5, seed=1) == response_edits(WRITTEN, pairs=5, seed=1)
    assert response_edits(PASSAGES, pairs=5, seed=1) == []
    assert len(response_edits(WRITTEN, pairs=2, seed=1)) == 4


def test_snippet_answers_use_the_answer_sentence_alone_as_the_context() -> None:
    pairs = []
    for seed in range(6):
        rows = snippet_answers(PASSAGES, pairs=10, seed=seed)
        pairs += list(zip(rows[::2], rows[1::2], strict=True))
    assert len(pairs) == 6 * 3  # each of the three passages with a short answer, every seed
    for good, bad in pairs:
        passage = next(p for p in PASSAGES if p.query == good["input"])
        assert good["context"] == bad["context"] and good["context"] in sentences(passage.context)
        assert passage.answer in good["output"] and passage.answer in good["context"]
        assert not set(words(bad["output"])) - set(words(good["output"])) <= set(words(good["context"]))
        assert (good["label"], bad["label"], good["kind"]) == (SUPPORTED, HALLUCINATED, "snippet_answer")
    assert {good["output"] for good, _ in pairs} > {p.answer for p in PASSAGES if p.answer}  # some restated


def test_retrieved_chunks_cut_the_context_to_the_sentences_that_support_the_faithful_answer() -> None:
    rows = counterfactual_pairs(PASSAGES, pairs=40, seed=0)
    chunked, kept = retrieved_chunks(rows, share=1.0, seed=0)
    assert chunked and len(chunked) + len(kept) == len(rows)
    before = {(r["output"], r["label"]): r for r in rows}
    for good, bad in zip(chunked[0::2], chunked[1::2], strict=True):
        passage, chunk = before[good["output"], SUPPORTED]["context"], good["context"]
        assert bad["context"] == chunk and chunk != passage and chunk in passage  # consecutive sentences
        chunk_sentences = sentences(chunk, min_words=3, max_words=80)
        assert 1 <= len(chunk_sentences) <= CHUNK_SENTENCES and " ".join(chunk_sentences) == chunk
        held = set(content_words(good["output"])) & set(words(passage))
        assert held <= set(words(chunk))  # the faithful answer keeps its support
        for row in (good, bad):
            assert dict(row, context=passage) == before[row["output"], row["label"]]  # only the context cut
    assert retrieved_chunks(rows, share=0.0, seed=0) == ([], rows)  # off: the rows as they were


def test_a_retrieved_chunk_is_the_fewest_sentences_holding_the_support() -> None:
    context = (
        "The museum opens at 9 am on weekdays. Tickets cost 12 euros for adults. Children under"
        " 6 enter free of charge. The cafe closes at 5 pm. Guided tours run every hour in English."
        " The shop sells posters and books."
    )
    rng = random.Random(0)
    answer = "Adults pay 12 euros; children under 6 enter free."
    chunks = [retrieved_chunk(answer, context, rng) or "" for _ in range(50)]
    assert all("Tickets cost 12 euros" in c and "Children under 6" in c for c in chunks)
    sizes = {len(sentences(c, min_words=3)) for c in chunks}
    assert min(sizes) == 2 and max(sizes) <= CHUNK_SENTENCES and len(set(chunks)) > 1  # widened at random
    one = "The museum opens at 9 am."
    assert retrieved_chunk(one, one, rng) is None  # the context is a chunk already
    assert retrieved_chunk("Dogs are welcome on the terrace.", context, rng) is None  # it holds nothing of it
