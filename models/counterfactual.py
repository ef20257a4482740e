"""Counterfactual pairs: a faithful and a hallucinated response in the same style, one fact apart.

HaluEval's label goes with the response's style: QA's right answers are short phrases and its
hallucinated ones sentences; dialogue's and summarization's hallucinations are LLM rewrites. An
encoder trained on it alone learns the style ("a sentence is hallucinated"), and fails the
answers LLM applications give. Each pair built here holds the style, the length and almost every
word fixed and changes one fact, the ways RAG answers go wrong:

- `entity_swap`: a name or number of a context sentence replaced by one absent from the context.
- `recombination`: a name or number replaced by another one *from the same context* (two true
  facts wrongly combined: every word is in the context, the statement is not).
- `number_change`: a number changed to a nearby one absent from the context.
- `negation`: the statement reversed ("is" <-> "is not", "can" <-> "cannot", ...), half of the
  time as a yes/no answer. Negation is on the faithful side as often as on the hallucinated one:
  a context sentence that is already negated ("No, it cannot be deleted." / "Yes, it can be
  deleted."), or the denial of a wrong statement ("No, it is not in Lyon." / "Yes, it is in
  Lyon.", Lyon named elsewhere in the context). Reversing only affirmative sentences taught the
  encoder that "not" and "No," mean hallucinated (HaluEval's dialogue leans the same way), and it
  then failed every faithful "No, ..." answer to a yes/no question.
- `added_claim`: two consecutive context sentences, against the first one followed by a sentence
  of another passage of about the same length (a plausible unsupported claim added).
- `short_answer`: the question's right short answer, against a short name or number of the same
  kind absent from the context ("Paris" / "Berlin, Germany"): a short phrase is not support.
- `answer_sentence`: the context sentence holding the right answer, against the same sentence with
  the answer swapped ("The Eiffel Tower is in Paris." / "... in Berlin."): a sentence is not a
  hallucination.
- `answer_statement`: the question restated as a full-sentence answer in the assistant's own words,
  with the right answer, against the same sentence with the answer swapped ("Who wrote Pride and
  Prejudice?" -> "Jane Austen wrote Pride and Prejudice." / "Charles Dickens wrote ..."): an
  answer that paraphrases instead of copying is not a hallucination either. It fits any QA
  passage whose short answer is in the context (`answer_sentence` fits only those whose answer
  sits in one whole sentence: 34 of the recipe's 1,000 pairs).

Response edits (`response_edits`) keep the writer's words instead: HaluEval's own faithful reply
or summary (a paraphrase, not a copy of the context) against the same text with one fact changed:

- `response_swap`: a name or number the context holds replaced by one it does not.
- `response_recombination`: a name or number the context holds replaced by another one it holds.
- `response_negation`: one sentence of the response reversed.

Both members then share a paraphrase's distance from the context, so closeness to the context's
wording no longer tells them apart; only the changed fact does.

Snippet answers (`snippet_answers`) take the QA passage's answer sentence alone as the context,
as a retriever may return one line: the right short answer against a wrong one of the same kind.

Half of the pairs are worded as an assistant answers (a lead-in such as "According to the
document," on both members, parentheses dropped), so a verbatim copy does not mean supported.
Only train-split (or, for the eval group, eval-split) passages are used. Generator: this module,
seeded; no model, no download.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from service.runtime.evidence import content_words, words

SUPPORTED = "supported"
HALLUCINATED = "hallucinated"
SOURCE = "synthetic_counterfactual"
T = TypeVar("T")
KINDS = (
    "entity_swap", "recombination", "number_change", "negation", "added_claim", "short_answer",
    "answer_sentence", "answer_statement",
)  # fmt: skip

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")
_NAME = r"(?<![\w'\u2019-])[A-Z][a-z]+(?:\s+(?:of\s+|de\s+)?[A-Z][a-z]+)*(?![\w'\u2019-])"
_NUMBER = r"(?<![\w.,-])(?:\d[\d,]*\d|\d)(?![\w.,-]?\d)"
_ENTITY = re.compile(f"{_NAME}|{_NUMBER}")
_NEGATABLE = re.compile(
    r"\b(cannot)\b"
    r"|\b(is|was|are|were|can|could|will|would|should|must|does|did|do|has|have|had)(n't\b| not\b|\b)"
)
LEAD_INS = (
    "According to the document, ", "Based on the provided context, ", "The text says that ",
    "To summarise, ", "In short, ", "As stated in the source, ",
)  # fmt: skip
_VERB_AFTER_WH = re.compile(
    r"^(?:Who|What|Which)\s+((?:\w+ed|wrote|won|made|sang|led|began|became|took|built|founded|owns|"
    r"plays|played|created|directed|produced|released|hosted|includes)\b.*)$",
    re.IGNORECASE,
)
_BE = r"(?:is|was|are|were)\b"
_BE_AFTER_WH_NOUN = re.compile(  # "Which <up to six words, no be-verb> was <the rest>"
    rf"^(?:Which|What)\s+(?!{_BE})(\w+(?:\s+(?!{_BE})\w+){{0,5}})\s+(is|was|are|were)\s+(.+)$", re.IGNORECASE
)
_WH_BE = re.compile(r"^(?:What|Who)\s+(is|was|are|were)\s+(.+)$", re.IGNORECASE)
_WH_INSIDE = re.compile(r"\b(?:which|what)\b", re.IGNORECASE)
_WHERE = re.compile(r"^Where\s+(is|was|are|were)\s+(.+)$", re.IGNORECASE)
_WHEN = re.compile(r"^When\s+(is|was|are|were)\s+(.+?)\s+(\w+ed|born)$", re.IGNORECASE)
WORDED_BY_MAKER = frozenset({"negation", "answer_statement"})  # already worded as answers: no lead-in
ANSWER_TEMPLATES = ("The answer is {}.", "It is {}.", "That would be {}.", "{}, according to the passage.")
_LOWER_STARTS = frozenset(
    "The A An It In This That These They He She There At On During After Before".split()
)


@dataclass(frozen=True)
class Passage:
    """A context to draw pairs from: its query and, for QA, its right short answer."""

    context: str
    query: str = ""
    answer: str = ""
    response: str = ""  # a faithful response written for this context (dialogue's, summarization's)


def sentences(text: str, min_words: int = 6, max_words: int = 40) -> list[str]:
    """Whole sentences only: a window's cut first and last fragments are left out."""
    out = []
    for s in (s.strip() for s in _SENTENCE_END.split(text)):
        whole = s[:1].isupper() or s[:1].isdigit() or s[:1] in "\"'\u201c"
        if whole and s[-1:] in ".!?\"'\u201d" and min_words <= len(s.split()) <= max_words:
            out.append(s)
    return out


def entities(text: str) -> list[re.Match[str]]:
    """Names and numbers of `text`; a capitalised word that starts a sentence is not a name."""
    found = []
    for m in _ENTITY.finditer(text):
        before = text[: m.start()].rstrip()
        if is_number(m.group(0)) or (before and before[-1] not in ".!?:\"'\u201c\u2018"):
            found.append(m)
    return found


def names_and_numbers(text: str) -> list[str]:
    """The text of `entities(text)`, in order: what a recombination may swap in."""
    return [m.group(0) for m in entities(text)]


def is_number(text: str) -> bool:
    return text[0].isdigit()


def entity_pools(passages: Sequence[Passage], rng: random.Random, limit: int = 4000) -> dict[bool, list[str]]:
    """Names and numbers seen in some passages, by kind (is_number): what swaps draw from."""
    found: list[str] = []
    lowercase: set[str] = set()  # words also written in lower case are common words, not names
    for p in rng.sample(list(passages), min(limit, len(passages))):
        found += [m.group(0) for m in entities(p.context)]
        lowercase.update(w for w in p.context.split() if w.islower())
    names = {e for e in found if not is_number(e) and not (" " not in e and e.lower() in lowercase)}
    return {True: sorted({e for e in found if is_number(e)}), False: sorted(names)}


class _Builder:
    """One pair of each kind from one passage, or None when the passage does not allow it."""

    def __init__(self, passages: Sequence[Passage], rng: random.Random) -> None:
        self.rng = rng
        self.passages = list(passages)  # sampled from for every added claim: listed once
        self.pools = entity_pools(self.passages, rng)

    def absent(self, like: str, context: str) -> str | None:
        pool = self.pools[is_number(like)]
        lowered = context.lower()
        for candidate in self.rng.sample(pool, min(30, len(pool))):
            if candidate.lower() not in lowered and abs(len(candidate.split()) - len(like.split())) <= 2:
                return candidate
        return None

    def _spans(self, sentence: str) -> list[re.Match[str]]:
        return [m for m in entities(sentence) if m.start() > 0]

    def unlike(self, answer: str, context: str) -> str | None:
        """A wrong value of the answer's kind, absent from the context: a number near it, or a name."""
        if is_number(answer):
            return _other_number(answer, context, self.rng)
        return self.absent(answer, context)

    def entity_swap(self, p: Passage) -> tuple[str, str] | None:
        for sentence in self._shuffled(sentences(p.context)):
            spans = [m for m in self._spans(sentence) if not is_number(m.group(0))]
            if spans:
                span = self.rng.choice(spans)
                swap = self.absent(span.group(0), p.context)
                if swap:
                    return sentence, _replace(sentence, span, swap)
        return None

    def recombination(self, p: Passage) -> tuple[str, str] | None:
        everywhere = names_and_numbers(p.context)
        for sentence in self._shuffled(sentences(p.context)):
            wrong = self._recombined(sentence, everywhere)
            if wrong:
                return sentence, wrong
        return None

    def number_change(self, p: Passage) -> tuple[str, str] | None:
        for sentence in self._shuffled(sentences(p.context)):
            spans = [m for m in self._spans(sentence) if is_number(m.group(0))]
            for span in spans:
                changed = _other_number(span.group(0), p.context, self.rng)
                if changed:
                    return sentence, _replace(sentence, span, changed)
        return None

    def negation(self, p: Passage) -> tuple[str, str] | None:
        """A statement and its reversal; the faithful member is negated in about half of the pairs."""
        reversible = [(s, r) for s in self._shuffled(sentences(p.context)) if (r := _negate(s))]
        if not reversible:
            return None
        negated = [(s, r) for s, r in reversible if _is_negated(s)]
        if negated and self.rng.random() < 0.5:  # the context denies it: the denial is faithful
            return self._yes_no(*negated[0], faithful_says_yes=False)
        sentence, reversed_ = reversible[0]
        if self.rng.random() < 0.5:  # the denial of a wrong statement is faithful
            wrong = self._recombined(sentence, names_and_numbers(p.context))
            denied = _negate(wrong) if wrong else None
            if wrong and denied:
                return self._yes_no(denied, wrong, faithful_says_yes=False)
        return self._yes_no(sentence, reversed_, faithful_says_yes=not _is_negated(sentence))

    def _yes_no(self, faithful: str, hallucinated: str, *, faithful_says_yes: bool) -> tuple[str, str]:
        """Half of the time as answers to a yes/no question ("Yes, ..." / "No, ..."), else as they are."""
        if self.rng.random() < 0.5:
            return self.assistant_style(faithful, hallucinated)
        first, second = ("Yes, ", "No, ") if faithful_says_yes else ("No, ", "Yes, ")
        return _reworded(faithful, first), _reworded(hallucinated, second)

    def _recombined(self, sentence: str, everywhere: list[str]) -> str | None:
        """The sentence with one name or number replaced by another of the same kind from
        `everywhere` (the context's names and numbers, listed once per passage by the caller)."""
        lowered = sentence.lower()
        for span in self._shuffled(self._spans(sentence)):
            kind = is_number(span.group(0))
            others = sorted({e for e in everywhere if is_number(e) == kind and e.lower() not in lowered})
            if others:
                return _replace(sentence, span, self.rng.choice(others))
        return None

    def added_claim(self, p: Passage) -> tuple[str, str] | None:
        ss = sentences(p.context, min_words=4, max_words=30)
        if len(ss) < 2:
            return None
        i = self.rng.randrange(len(ss) - 1)
        first, second = ss[i], ss[i + 1]
        n = len(second.split())
        lowered = p.context.lower()
        for other in self.rng.sample(self.passages, min(20, len(self.passages))):
            for claim in sentences(other.context, min_words=4, max_words=30):
                if abs(len(claim.split()) - n) <= 2 and claim.lower() not in lowered:
                    return f"{first} {second}", f"{first} {claim}"
        return None

    def short_answer(self, p: Passage) -> tuple[str, str] | None:
        answer = p.answer.strip()
        if not answer or len(answer.split()) > 4 or answer.lower() not in p.context.lower():
            return None
        swap = self.unlike(answer, p.context)
        return (answer, swap) if swap else None

    def answer_sentence(self, p: Passage) -> tuple[str, str] | None:
        answer = p.answer.strip()
        if not answer or len(answer.split()) > 4:
            return None
        pattern = re.compile(rf"\b{re.escape(answer)}\b", re.IGNORECASE)
        for sentence in sentences(p.context):
            span = pattern.search(sentence)
            if span:
                swap = self.unlike(answer, p.context)
                return (sentence, _replace(sentence, span, swap)) if swap else None
        return None

    def answer_statement(self, p: Passage) -> tuple[str, str] | None:
        answer = p.answer.strip().rstrip(".")
        if not answer or len(answer.split()) > 6 or answer.lower() not in p.context.lower():
            return None
        swap = self.unlike(answer, p.context)
        if not swap:
            return None
        template = statement_template(p.query) or self.rng.choice(ANSWER_TEMPLATES)
        return _sentence(template.format(answer)), _sentence(template.format(swap))

    def _shuffled(self, items: list[T]) -> list[T]:
        return self.rng.sample(items, len(items))

    def assistant_style(self, faithful: str, hallucinated: str) -> tuple[str, str]:
        """The same rewording on both members: a lead-in, no parentheses."""
        if len(faithful.split()) < 5 or self.rng.random() < 0.5:
            return faithful, hallucinated
        lead = self.rng.choice(LEAD_INS)
        reworded = _reworded(faithful, lead), _reworded(hallucinated, lead)
        return (
            reworded if reworded[0] != reworded[1] else (faithful, hallucinated)
        )  # the fact was in parentheses


def statement_template(question: str) -> str | None:
    """The question as a statement with `{}` where its answer goes, or None when no rule fits.

    Plain rules: "Who wrote X?" -> "{} wrote X."; "Which actress from X was known as Y?" -> "The
    actress from X that was known as Y was {}."; "Where is X?" -> "X is in {}."; "When was X
    founded?" -> "X was founded in {}."; "X includes which Y?" -> "X includes the Y, {}." Braces
    in the question are escaped so only the answer's slot remains.
    """
    text = re.sub(r"^Q:\s*", "", " ".join(question.split())).rstrip(" ?")
    text = text.replace("{", "{{").replace("}", "}}")
    if not text or text.split()[0].lower() in {"are", "is", "was", "were", "do", "does", "did", "can"}:
        return None  # a yes/no question: the negation pairs answer those
    if m := _VERB_AFTER_WH.match(text):
        return "{} " + m.group(1) + "."
    if m := _BE_AFTER_WH_NOUN.match(text):
        return f"The {m.group(1)} that {m.group(2)} {m.group(3)} {m.group(2)} {{}}."
    if m := _WH_BE.match(text):  # "What is the capital of X?" -> "The capital of X is {}."
        return f"{m.group(2)} {m.group(1).lower()} {{}}."
    if m := _WHERE.match(text):
        return f"{m.group(2)} {m.group(1).lower()} in {{}}."
    if m := _WHEN.match(text):
        return f"{m.group(2)} {m.group(1).lower()} {m.group(3)} in {{}}."
    inside = list(_WH_INSIDE.finditer(text))
    after = text[inside[0].end() :].split()[:1] if inside else []
    if (
        len(inside) == 1
        and len(text[: inside[0].start()].split()) >= 3
        and after
        and after[0].lower() not in {"is", "was", "are", "were", "that"}
    ):  # "X includes which Y?"
        return _WH_INSIDE.sub("the", text) + ", {}."
    return None


def _sentence(text: str) -> str:
    """Capitalised first letter, one final full stop."""
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _replace(sentence: str, span: re.Match[str], swap: str) -> str:
    return sentence[: span.start()] + swap + sentence[span.end() :]


def _reworded(sentence: str, lead: str) -> str:
    text = re.sub(r"\s*\([^)]*\)", "", sentence)
    first, _, rest = text.partition(" ")
    if first in _LOWER_STARTS:
        text = f"{first.lower()} {rest}"
    return lead + text


def _other_number(number: str, context: str, rng: random.Random) -> str | None:
    """A different number of the same form and size, absent from the context (years stay years)."""
    digits = number.replace(",", "")
    if not digits.isdigit():
        return None
    value = int(digits)
    if 1000 <= value <= 2100 and len(digits) == 4:
        options = [value + d for d in (-12, -7, -3, -2, -1, 1, 2, 3, 5, 9)]
    else:
        options = [value + d for d in (1, 2, 3, 5)] + [value * 2, value * 3, max(value // 2, 1)]
        if value > 10:
            options += [value - d for d in (1, 2, 5, 10) if value - d > 0]
    candidates = [f"{o:,}" if "," in number else str(o) for o in options if o != value]
    words_in_context = set(words(context))
    candidates = [c for c in candidates if c.replace(",", "") not in words_in_context and c not in context]
    return rng.choice(candidates) if candidates else None


def _is_negated(sentence: str) -> bool:
    """Whether the sentence's first reversible auxiliary is negated ("cannot", "is not", "isn't")."""
    m = _NEGATABLE.search(sentence)
    return bool(m and (m.group(1) or m.group(3)))


def _negate(sentence: str) -> str | None:
    """The sentence with its first auxiliary's polarity reversed, or None when it has none."""
    m = _NEGATABLE.search(sentence)
    if not m:
        return None
    if m.group(1):  # cannot -> can
        return sentence[: m.start()] + "can" + sentence[m.end() :]
    verb, negated = m.group(2), m.group(3)
    if negated:  # "is not" / "isn't" -> "is"
        return sentence[: m.start()] + verb + sentence[m.end() :]
    if verb.lower() in {"does", "did", "do", "has", "have", "had"}:
        rest = sentence[m.end() :].split()
        if not rest or not rest[0].islower():  # main verbs ("has two sons"): not reversible by "not"
            return None
    replacement = "cannot" if verb == "can" else f"{verb} not"
    return sentence[: m.start()] + replacement + sentence[m.end() :]


def _pair_rows(query: str, context: str, faithful: str, hallucinated: str, kind: str) -> list[dict[str, str]]:
    """A supported and a hallucinated row of one pair, in that order."""
    return [
        {"input": query, "output": output, "context": context, "label": label, "source": SOURCE, "kind": kind}
        for output, label in ((faithful, SUPPORTED), (hallucinated, HALLUCINATED))
    ]


def weighted_kinds(weights: Mapping[str, int]) -> tuple[str, ...]:
    """The `kinds` of `counterfactual_pairs` for a mix that wants more of some kinds: every kind of
    `KINDS` once, then those of weight 2 or more again, and so on (a kind's weight defaults to 1;
    0 leaves it out). A number change needs a passage that states a number, so in plain turns it
    gets fewer pairs than the kinds any passage allows, which take the turns it cannot."""
    if unknown := sorted(set(weights) - set(KINDS)):
        raise ValueError(f"unknown counterfactual kind(s) {unknown}; known: {', '.join(KINDS)}")
    if bad := sorted(k for k, w in weights.items() if w < 0):
        raise ValueError(f"negative weight for {bad}")
    counts = {k: weights.get(k, 1) for k in KINDS}
    rounds = max(counts.values(), default=0)
    kinds = tuple(k for turn in range(rounds) for k in KINDS if counts[k] > turn)
    if not kinds:
        raise ValueError("every counterfactual kind has weight 0")
    return kinds


def counterfactual_pairs(
    passages: Sequence[Passage], *, pairs: int, seed: int, kinds: Sequence[str] = KINDS
) -> list[dict[str, str]]:
    """Up to `pairs` (supported, hallucinated) rows, `kinds` in turn (a kind may repeat: the more
    often it comes, the more of its pairs), one passage per pair (seeded).

    Rows carry `input` (the passage's query), `output`, `context`, `label` and `source`
    (`synthetic_counterfactual`, one group for the combiner and the threshold) plus `kind`.
    """
    rng = random.Random(seed)
    builder = _Builder(passages, rng)
    makers: dict[str, Callable[[Passage], tuple[str, str] | None]] = {
        k: getattr(builder, k) for k in set(kinds)
    }
    order = rng.sample(list(passages), len(passages))
    out: list[dict[str, str]] = []
    turn = 0
    for passage in order:
        if len(out) >= 2 * pairs:
            break
        for attempt in range(len(kinds)):  # this passage's turn kind first, then any kind it allows
            kind = kinds[(turn + attempt) % len(kinds)]
            made = makers[kind](passage)
            if made and made[0] != made[1]:
                faithful, hallucinated = made if kind in WORDED_BY_MAKER else builder.assistant_style(*made)
                out += _pair_rows(passage.query, passage.context, faithful, hallucinated, kind)
                turn += 1
                break
    return out


RESPONSE_EDITS = ("response_swap", "response_recombination", "response_negation")


def response_edits(passages: Sequence[Passage], *, pairs: int, seed: int) -> list[dict[str, str]]:
    """Up to `pairs` (faithful response, the same response with one fact changed) row pairs, from
    passages that carry a `response`; the edit kinds in turn, as `counterfactual_pairs` does.

    Only a name or number the context holds is changed: one the context lacks was never
    supported, and changing it would not make the response less so.
    """
    rng = random.Random(f"{seed}:response_edits")
    written = [p for p in passages if p.response.strip()]
    builder = _Builder(written, rng)
    out: list[dict[str, str]] = []
    turn = 0
    for passage in rng.sample(written, len(written)):
        if len(out) >= 2 * pairs:
            break
        faithful = " ".join(passage.response.split())
        for attempt in range(len(RESPONSE_EDITS)):
            kind = RESPONSE_EDITS[(turn + attempt) % len(RESPONSE_EDITS)]
            edited = _edit_response(builder, kind, faithful, passage.context)
            if edited and edited != faithful:
                out += _pair_rows(passage.query, passage.context, faithful, edited, kind)
                turn += 1
                break
    return out


def _edit_response(builder: _Builder, kind: str, response: str, context: str) -> str | None:
    """`response` with one fact changed the `kind` way, or None when it offers nothing to change.

    A negated sentence must name something the context holds: reversing an opinion ("It was a
    great atmosphere.") is not a change of fact the context could contradict.
    """
    lowered = context.lower()

    def held(text: str) -> list[re.Match[str]]:
        return [m for m in entities(text) if m.group(0).lower() in lowered]

    if kind == "response_negation":
        for sentence in builder._shuffled(sentences(response, min_words=4) or [response]):
            reversed_ = _negate(sentence) if held(sentence) else None
            if reversed_:
                return response.replace(sentence, reversed_, 1)
        return None
    everywhere = names_and_numbers(context)
    for span in builder._shuffled(held(response)):
        text = span.group(0)
        if kind == "response_swap":
            swap = (
                _other_number(text, context, builder.rng)
                if is_number(text)
                else builder.absent(text, context)
            )
        else:
            others = sorted(
                {e for e in everywhere if _interchangeable(e, text) and e.lower() not in response.lower()}
            )
            swap = builder.rng.choice(others) if others else None
        if swap:
            return _replace(response, span, swap)
    return None


def _interchangeable(other: str, text: str) -> bool:
    """Another value of the same kind (numbers of as many digits, so a year stays a year), neither
    inside the other ("Year of the Flood" / "The Year of the Flood" is the same name)."""
    a, b = other.lower(), text.lower()
    if a in b or b in a or is_number(other) != is_number(text):
        return False
    return not is_number(text) or len(other.replace(",", "")) == len(text.replace(",", ""))


def snippet_answers(passages: Sequence[Passage], *, pairs: int, seed: int) -> list[dict[str, str]]:
    """Up to `pairs` row pairs whose context is only the passage's sentence holding the right short
    answer (a one-line snippet, as a retriever may return): the right answer against one of the
    same kind absent from it, and as often the answer restated in a sentence (`answer_statement`'s
    templates) against the same sentence with the wrong answer.

    Trained on paragraph-long contexts alone, the encoder lets a short wrong answer pass against a
    one-sentence context ("London" for "Where is the Eiffel Tower?" against "The Eiffel Tower is
    a wrought-iron tower in Paris, France.": 0.84 with version 2).
    """
    rng = random.Random(f"{seed}:snippet_answers")
    builder = _Builder(passages, rng)
    out: list[dict[str, str]] = []
    for passage in rng.sample(list(passages), len(passages)):
        if len(out) >= 2 * pairs:
            break
        answer = passage.answer.strip().rstrip(".")
        if not answer or len(answer.split()) > 4:
            continue
        pattern = re.compile(rf"\b{re.escape(answer)}\b", re.IGNORECASE)
        snippet = next((s for s in sentences(passage.context) if pattern.search(s)), None)
        wrong = builder.unlike(answer, snippet) if snippet else None
        if not (snippet and wrong):
            continue
        faithful, hallucinated = answer, wrong
        template = statement_template(passage.query) if rng.random() < 0.5 else None
        if template:
            faithful, hallucinated = _sentence(template.format(answer)), _sentence(template.format(wrong))
        out += _pair_rows(passage.query, snippet, faithful, hallucinated, "snippet_answer")
    return out


CHUNK_SENTENCES = 5  # a retrieved chunk: at most this many whole sentences


def retrieved_chunks(
    rows: Sequence[dict[str, str]], *, share: float, seed: int
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(`share` of the pairs of `rows` with their context cut to a retrieved chunk, the others as
    they were), seeded; `rows` in (supported, hallucinated) order as `counterfactual_pairs` makes.

    Retrievers return a few sentences, not a paragraph: the README's and the obvious pairs'
    contexts are one to four. Trained on paragraph-long passages alone, the encoder misjudges
    answers against a short context ("London" passes against one sentence about Paris). A chunk
    is the fewest consecutive whole sentences that hold every content word of the faithful
    response the passage holds, widened at random to up to `CHUNK_SENTENCES`: the faithful member
    stays supported, and what made the other member wrong (a name, number or claim the passage
    lacks, or a reversed statement) is still wrong against the chunk. A pair whose support needs
    more sentences keeps its passage.
    """
    rng = random.Random(f"{seed}:retrieved_chunks")
    chunked: list[dict[str, str]] = []
    kept: list[dict[str, str]] = []
    for good, bad in zip(rows[0::2], rows[1::2], strict=True):
        chunk = retrieved_chunk(good["output"], good["context"], rng) if rng.random() < share else None
        if chunk:
            chunked += [dict(good, context=chunk), dict(bad, context=chunk)]
        else:
            kept += [good, bad]
    return chunked, kept


def retrieved_chunk(faithful: str, context: str, rng: random.Random) -> str | None:
    """The context's fewest consecutive whole sentences holding the faithful response's content
    words that the context holds, widened at random to at most `CHUNK_SENTENCES`; None when no
    such chunk exists or it would be the whole context."""
    whole = sentences(context, min_words=3, max_words=80)
    held = set(content_words(faithful)) & set(words(context))
    if not whole or not held:
        return None
    sets = [set(words(s)) for s in whole]
    best: tuple[int, int] | None = None
    for start in range(len(whole)):
        covered: set[str] = set()
        for end in range(start, min(start + CHUNK_SENTENCES, len(whole))):
            covered |= sets[end]
            if held <= covered:
                if best is None or end - start < best[1] - best[0]:
                    best = (start, end)
                break
    if best is None:
        return None
    start, end = best
    room = CHUNK_SENTENCES - (end - start + 1)
    before = rng.randint(0, min(room, start))
    after = rng.randint(0, min(room - before, len(whole) - 1 - end))
    chunk = " ".join(whole[start - before : end + after + 1])
    return None if chunk == " ".join(context.split()) else chunk
