"""Explicit evidence combined with the encoder's score, when a metric's manifest declares it.

An encoder reading one window of context cannot see a fact stated elsewhere in a long context,
and a small one matches words better than it checks them. Checking the response's words
against the *whole* context is cheap, exact, and window-independent. The `share_*` features are
shares of the response (of its content words, names, numbers, word pairs, or of its weakest
sentence's words), so they do not grow with the response's length the way counts do: a long
faithful summary and a short faithful answer both score near 0. A metric may combine them with
the encoder by a logistic model whose weights were fitted at build time:

    score = sigmoid(model_weight * logit(p_encoder) + sum_k weight_k * feature_k + bias)

An item the encoder read in several windows (a long document) may have weights of its own
(`windowed`): there the encoder saw only pieces of the context, so the whole-context evidence
must count for more and the encoder for less than on a short context it read whole.

The combiner is part of the metric: declared in the manifest, computed here, so `evaluate` and
the server give the same score.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from enum import StrEnum
from itertools import pairwise

from pydantic import BaseModel, ConfigDict, Field

from service.runtime.claims import sentences

_WORD = re.compile(r"[A-Za-z0-9]+(?:['\u2019][A-Za-z]+)?")
_NAME = re.compile(r"\b[A-Z][A-Za-z0-9]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# Function words that say nothing about support; small and fixed so features are reproducible.
STOPWORDS = frozenset(
    """a about above after again against all also am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    s t don""".split()
)
# Negation words: stopwords to the content features, so a reversed statement is invisible to them.
NEGATIONS = frozenset("not no never cannot none nobody nothing neither nor without".split())
EPSILON = 1e-6


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits; an apostrophe suffix stays attached)."""
    return [w.lower() for w in _WORD.findall(text)]


def content_words(text: str) -> list[str]:
    """Words of `text` that are not stopwords (order kept, duplicates kept)."""
    return [w for w in words(text) if w not in STOPWORDS]


class EvidenceFeature(StrEnum):
    N_MISSING_CONTENT = "n_missing_content"  # distinct response content words absent from the context
    SHARE_MISSING_CONTENT = "share_missing_content"  # the same as a share of the response's content words
    N_MISSING_NAMES = "n_missing_names"  # distinct capitalised words absent from the context
    N_MISSING_NUMBERS = "n_missing_numbers"  # distinct numbers absent from the context
    SHARE_MISSING_NAMES = "share_missing_names"  # of the response's distinct names, the share absent
    SHARE_MISSING_NUMBERS = "share_missing_numbers"  # of the response's distinct numbers, the share absent
    SHARE_NOVEL_BIGRAMS = "share_novel_bigrams"  # of the response's word pairs, the share the context lacks
    WEAKEST_SENTENCE_MISSING = "weakest_sentence_missing"  # the highest missing-content share of a sentence
    SHARE_POLARITY_FLIPPED = (
        "share_polarity_flipped"  # of its sentences, the share negated unlike their source
    )
    MISSING_CONTENT_UP_TO_2 = "missing_content_up_to_2"  # 0, 0.5 or 1: none, one, two or more absent
    LOCAL_MISSING_SHARE = "local_missing_share"  # as share_missing_content, against each sentence's source
    SHARE_STATED_SENTENCES = "share_stated_sentences"  # of its sentences, the share a context sentence states
    SHARE_CHANGED_QUANTITIES = (
        "share_changed_quantities"  # of quantities in a unit the context counts, the share it never states
    )


FOR_SUPPORT = frozenset({EvidenceFeature.SHARE_STATED_SENTENCES})  # the rest count against it


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


_NUMBER_FEATURES = frozenset({EvidenceFeature.N_MISSING_NUMBERS, EvidenceFeature.SHARE_MISSING_NUMBERS})
_SENTENCE_FEATURES = frozenset(
    {EvidenceFeature.SHARE_NOVEL_BIGRAMS, EvidenceFeature.WEAKEST_SENTENCE_MISSING}
)
_SOURCE_FEATURES = frozenset(
    {
        EvidenceFeature.SHARE_POLARITY_FLIPPED,
        EvidenceFeature.SHARE_STATED_SENTENCES,
        EvidenceFeature.LOCAL_MISSING_SHARE,
    }
)
SOURCE_SENTENCES = 2  # a response sentence's source: this many consecutive context sentences


def is_negated(sentence_words: list[str]) -> bool:
    return any(w in NEGATIONS or w.endswith("n't") for w in sentence_words)


def _claim_and_polarity(sentence: str) -> tuple[frozenset[str], bool]:
    """A sentence's content words and whether it is negated, from one pass of the word rule."""
    tokens = words(sentence)
    return frozenset(w for w in tokens if w not in STOPWORDS), is_negated(tokens)


Sources = list[tuple[frozenset[str], bool]]  # each context sentence's content words and polarity


def context_sources(context: str) -> Sources:
    """What the polarity features compare a response sentence with: computed once per item."""
    return [_claim_and_polarity(s) for s in sentences(context)]


def share_polarity_flipped(
    output: str, context: str, min_shared: int = 2, *, sources: Sources | None = None
) -> float:
    """Of the response's sentences, the share whose closest context sentence has the other polarity.

    The closest context sentence is the one whose content words overlap the sentence's most
    (Jaccard; at least `min_shared` words shared);
    a response sentence negated where its source is not, or the reverse ("Gift cards cannot be
    returned." / "Yes, gift cards can be returned."), states the opposite with the same words.
    """
    sources = context_sources(context) if sources is None else sources
    judged = flipped = 0
    for sentence in sentences(output):
        claim, negated = _claim_and_polarity(sentence)
        if not claim:
            continue
        judged += 1
        best_overlap, closest = 0.0, None
        for source in sources:
            shared = len(claim & source[0])
            overlap = shared / (len(claim) + len(source[0]) - shared) if shared else 0.0
            if overlap > best_overlap:  # the first of equals, as max() would pick
                best_overlap, closest = overlap, source
        if closest is not None and len(claim & closest[0]) >= min_shared:
            flipped += closest[1] != negated
    return _share(flipped, judged)


def share_stated_sentences(output: str, context: str, *, sources: Sources | None = None) -> float:
    """Of the response's sentences, the share whose every content word one context sentence holds,
    negated alike ("No, gift cards cannot be returned." against "Gift cards cannot be returned.").

    The one feature that speaks *for* support: an answer restating what the context says, word
    for word and with its polarity, is supported whatever the encoder makes of its form (a denial,
    a short phrase). A swapped word, a reversed statement or words gathered from two sentences
    make a sentence unstated.
    """
    sources = context_sources(context) if sources is None else sources
    judged = stated = 0
    for sentence in sentences(output):
        claim, negated = _claim_and_polarity(sentence)
        if claim:
            judged += 1
            stated += any(claim <= words_ and negated == polarity for words_, polarity in sources)
    return _share(stated, judged)


def local_missing_share(
    output: str, context: str, span: int = SOURCE_SENTENCES, *, sources: Sources | None = None
) -> float:
    """Of the response's content words, the share absent from each sentence's own source.

    A sentence's source is the run of `span` consecutive context sentences holding most of its
    content words. In a long document every word of a wrong summary may occur *somewhere* (the
    whole-context share misses it), but not together where the sentence claims them; a faithful
    summary's sentence mostly restates one or two sentences of the document. Sentences with
    fewer than two content words ("Yes.") are left out.
    """
    sources = context_sources(context) if sources is None else sources
    source_words = [claim for claim, _ in sources] or [frozenset()]
    runs = [set().union(*source_words[i : i + span]) for i in range(max(1, len(source_words) - span + 1))]
    judged = missing = 0
    for sentence in sentences(output):
        claim = set(content_words(sentence))
        if len(claim) < 2:
            continue
        best = max(runs, key=lambda run: len(claim & run))
        judged += len(claim)
        missing += len(claim - best)
    return _share(missing, judged)


_QUANTITY_TOKEN = re.compile(r"\d+(?:[.,]\d+)*|[A-Za-z]+")
_NOT_UNITS = frozenset({"per", "than", "and"})


def quantities(text: str) -> set[tuple[str, str]]:
    """(number, unit) pairs of `text`: each number with the lower-case word of 3+ letters after it
    ("within 30 days" -> ("30", "day")), plural and thousands separators folded ("1,000 tablets" =
    "1000 tablet"). A name after a number ("2015 McIlroy"), an ordinal's "th" and an abbreviation
    such as "m" or "pm" are not units: summaries write those in too many ways."""
    tokens = _QUANTITY_TOKEN.findall(text)
    found = set()
    for number, unit in pairwise(tokens):
        if number[0].isdigit() and unit.islower() and len(unit) >= 3 and unit not in STOPWORDS | _NOT_UNITS:
            found.add((number.replace(",", ""), unit.removesuffix("s")))
    return found


def share_changed_quantities(output: str, context: str) -> float:
    """Of the response's quantities whose unit the context also counts, the share with a number the
    context never gives that unit ("boils at 70 degrees" against "boils at 100 degrees").

    A changed number is the commonest single-fact error of RAG answers, and the plain missing-number
    share cannot tell it from a number a faithful summary wrote another way; a unit the context
    counts with other numbers only is a changed quantity.
    """
    stated = quantities(context)
    units = {unit for _, unit in stated}
    judged = [q for q in quantities(output) if q[1] in units]
    return _share(sum(q not in stated for q in judged), len(judged))


def evidence_features(
    output: str, context: str, wanted: Collection[EvidenceFeature] | None = None
) -> dict[EvidenceFeature, float]:
    """The `wanted` features (default: every one) for one item, against the whole context.

    Only what is wanted is computed: a served item computes its combiner's features, and the
    context's numbers and word pairs cost a pass over a context of thousands of words each.
    """
    wanted = frozenset(EvidenceFeature if wanted is None else wanted)
    context_tokens = words(context)
    context_words = set(context_tokens)
    content = set(content_words(output))
    missing = content - context_words
    names = {n.lower() for n in _NAME.findall(output)} - STOPWORDS
    found: dict[EvidenceFeature, float] = {
        EvidenceFeature.N_MISSING_CONTENT: float(len(missing)),
        EvidenceFeature.SHARE_MISSING_CONTENT: _share(len(missing), len(content)),
        EvidenceFeature.N_MISSING_NAMES: float(len(names - context_words)),
        EvidenceFeature.SHARE_MISSING_NAMES: _share(len(names - context_words), len(names)),
        # one absent word is what a single swapped fact leaves, however long the sentence
        EvidenceFeature.MISSING_CONTENT_UP_TO_2: min(len(missing), 2) / 2,
    }
    if wanted & _NUMBER_FEATURES:
        numbers = set(_NUMBER.findall(output))
        absent = numbers - set(_NUMBER.findall(context))
        found[EvidenceFeature.N_MISSING_NUMBERS] = float(len(absent))
        found[EvidenceFeature.SHARE_MISSING_NUMBERS] = _share(len(absent), len(numbers))
    if wanted & _SENTENCE_FEATURES:
        bigrams: set[tuple[str, str]] = set()
        weakest = 0.0
        for sentence in sentences(output):
            bigrams |= set(pairwise(words(sentence)))
            claim = set(content_words(sentence))
            weakest = max(weakest, _share(len(claim - context_words), len(claim)))
        found[EvidenceFeature.WEAKEST_SENTENCE_MISSING] = weakest
        if EvidenceFeature.SHARE_NOVEL_BIGRAMS in wanted:  # the context's pairs: the costly part
            novel = bigrams - set(pairwise(context_tokens))
            found[EvidenceFeature.SHARE_NOVEL_BIGRAMS] = _share(len(novel), len(bigrams))
    if wanted & _SOURCE_FEATURES:
        sources = context_sources(context)  # the context's sentences, read once for all three
        if EvidenceFeature.SHARE_POLARITY_FLIPPED in wanted:
            found[EvidenceFeature.SHARE_POLARITY_FLIPPED] = share_polarity_flipped(
                output, context, sources=sources
            )
        if EvidenceFeature.SHARE_STATED_SENTENCES in wanted:
            found[EvidenceFeature.SHARE_STATED_SENTENCES] = share_stated_sentences(
                output, context, sources=sources
            )
        if EvidenceFeature.LOCAL_MISSING_SHARE in wanted:
            found[EvidenceFeature.LOCAL_MISSING_SHARE] = local_missing_share(output, context, sources=sources)
    if EvidenceFeature.SHARE_CHANGED_QUANTITIES in wanted:
        found[EvidenceFeature.SHARE_CHANGED_QUANTITIES] = share_changed_quantities(output, context)
    return {f: found[f] for f in EvidenceFeature if f in wanted}


class LogisticWeights(BaseModel):
    """One logistic combination: the encoder's logit and features, weighted, plus a bias."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model_weight: float = Field(description="Weight of logit(p) of the encoder's positive label.")
    feature_weights: dict[EvidenceFeature, float] = Field(description="Weight of each evidence feature.")
    bias: float = 0.0

    def probability(self, p_model: float, features: Mapping[EvidenceFeature, float]) -> float:
        p = min(max(p_model, EPSILON), 1 - EPSILON)
        z = self.model_weight * math.log(p / (1 - p)) + self.bias
        z += sum(w * features[f] for f, w in self.feature_weights.items())
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0


class EvidenceCombiner(LogisticWeights):
    """Logistic combination of the encoder's logit with evidence features (fitted weights).

    The top-level weights serve items read in one window; `windowed`, when present, serves items
    read in several.
    """

    kind: str = Field("logistic", pattern="^logistic$")
    windowed: LogisticWeights | None = Field(
        None, description="Weights for items the encoder read in more than one window (long contexts)."
    )
    output_field: str = Field("output", description="The item field whose words are checked.")
    context_field: str = Field("context", description="The item field the words must appear in.")
    fitted_on: str = Field("", description="Data the weights were fitted on, for the model card.")

    def wanted(self) -> set[EvidenceFeature]:
        """Every feature either set of weights reads."""
        return set(self.feature_weights) | set(self.windowed.feature_weights if self.windowed else ())

    def weights_for(self, windows: int) -> LogisticWeights:
        """The weights that serve an item read in `windows` windows."""
        return self.windowed if windows > 1 and self.windowed is not None else self

    def features(
        self, item: Mapping[str, str | None], *, windows: int | None = None
    ) -> dict[EvidenceFeature, float]:
        """The item's features: those its weights read when `windows` is known (a long context's
        costly word pairs are not computed for weights that do not read them), else every one."""
        wanted = self.wanted() if windows is None else set(self.weights_for(windows).feature_weights)
        output, context = item.get(self.output_field) or "", item.get(self.context_field) or ""
        return evidence_features(output, context, wanted)

    def combine(
        self, p_model: float, features: Mapping[EvidenceFeature, float], *, windows: int = 1
    ) -> float:
        return self.weights_for(windows).probability(p_model, features)
