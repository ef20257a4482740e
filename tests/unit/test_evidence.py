"""service.runtime.evidence and models.combine: features, the logistic combination, fitting it."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from models.combine import fit_combiner
from service.runtime.classifier import MetricModel
from service.runtime.evidence import FOR_SUPPORT, EvidenceCombiner, EvidenceFeature, evidence_features
from tests.conftest import counting_spec
from tests.tiny_models import expected_score, write_counting_artifact

F = EvidenceFeature


def test_evidence_features_count_what_the_context_lacks() -> None:
    features = evidence_features(
        "Marie Curie won 2 Nobel prizes in 1911, the year she moved to Berlin.",
        "Marie Curie received the Nobel prize in Chemistry in 1911.",
    )
    # content words absent: won, 2, prizes, year, moved, berlin
    assert features[F.N_MISSING_CONTENT] == 6
    assert features[F.SHARE_MISSING_CONTENT] == pytest.approx(6 / 10)
    assert features[F.N_MISSING_NAMES] == 1  # berlin
    assert features[F.N_MISSING_NUMBERS] == 1  # 2
    assert evidence_features("", "anything")[F.SHARE_MISSING_CONTENT] == 0.0
    # shares: names marie, curie, nobel, berlin (1 absent); numbers 2, 1911 (1 absent)
    assert features[F.SHARE_MISSING_NAMES] == pytest.approx(1 / 4)
    assert features[F.SHARE_MISSING_NUMBERS] == pytest.approx(1 / 2)


def test_share_features_do_not_grow_with_the_response() -> None:
    context = "The museum opens at 9 am on weekdays. Entry costs 12 euros for adults."
    short = "The museum opens at 9 am."
    long = "The museum opens at 9 am on weekdays. Entry costs 12 euros for adults. The museum opens at 9 am."
    shares = [f for f in F if f.value.startswith("share_") or f.value.startswith("weakest")]
    for feature in shares:  # a fully supported response: nothing against it, everything for it
        expected = 1.0 if feature in FOR_SUPPORT else 0.0
        assert evidence_features(short, context)[feature] == expected
        assert evidence_features(long, context)[feature] == expected
    assert evidence_features(long, context)[F.N_MISSING_CONTENT] == 0.0


def test_weakest_sentence_finds_the_one_unsupported_claim() -> None:
    context = "The museum opens at 9 am on weekdays. Entry costs 12 euros for adults."
    summary = "The museum opens at 9 am on weekdays. Children enter free with guided tours daily."
    features = evidence_features(summary, context)
    # second sentence: children, enter, free, guided, tours, daily all absent
    assert features[F.WEAKEST_SENTENCE_MISSING] == pytest.approx(1.0)
    assert features[F.SHARE_MISSING_CONTENT] < 0.7  # diluted by the supported first sentence


def test_novel_word_pairs_catch_recombined_facts() -> None:
    context = "Alice Smith leads sales in Paris. Bob Jones leads research in Berlin."
    swapped = evidence_features("Alice Jones leads sales in Paris.", context)
    faithful = evidence_features("Alice Smith leads sales in Paris.", context)
    assert swapped[F.SHARE_MISSING_CONTENT] == faithful[F.SHARE_MISSING_CONTENT] == 0.0
    assert swapped[F.SHARE_NOVEL_BIGRAMS] > faithful[F.SHARE_NOVEL_BIGRAMS] == 0.0


def test_evidence_combiner_is_a_logistic_model_of_logit_and_features() -> None:
    combiner = EvidenceCombiner(model_weight=2.0, feature_weights={F.N_MISSING_CONTENT: -1.5}, bias=0.25)
    p = 0.8
    expected = 1 / (1 + math.exp(-(2.0 * math.log(p / (1 - p)) - 1.5 * 3 + 0.25)))
    assert combiner.combine(p, {F.N_MISSING_CONTENT: 3.0}) == pytest.approx(expected)
    assert 0.0 < combiner.combine(1.0, {F.N_MISSING_CONTENT: 0.0}) < 1.0  # clipped, never inf


def test_metric_model_applies_the_declared_combiner_on_the_whole_context(tmp_path: Path) -> None:
    combiner = EvidenceCombiner(model_weight=1.0, feature_weights={F.N_MISSING_CONTENT: -1.0}, bias=0.0)
    folder = write_counting_artifact(tmp_path / "repo", counting_spec(), tmp_path, evidence=combiner)
    model = MetricModel.load(folder)
    long_context = " ".join(["x"] * 150) + " paris"  # "paris" only in the last window
    supported, unsupported = model.score(
        [
            {"output": "good paris", "context": long_context},
            {"output": "good berlin", "context": long_context},
        ]
    )
    p = expected_score(1, 0)
    logit = math.log(p / (1 - p))
    assert supported.windows > 1
    assert supported.score == pytest.approx(1 / (1 + math.exp(-(logit - 1))))  # "good" is missing
    assert unsupported.score == pytest.approx(1 / (1 + math.exp(-(logit - 2))))  # "good", "berlin"


def test_fit_combiner_learns_that_missing_words_count_against() -> None:
    rng = random.Random(0)
    rows, scores = [], []
    for i in range(200):
        supported = i % 2 == 0
        extra = "" if supported else " " + " ".join(rng.choice(["berlin", "rome", "oslo"]) for _ in range(2))
        rows.append({"output": "paris is big" + extra, "context": "paris is big and old",
                     "label": "supported" if supported else "hallucinated"})  # fmt: skip
        scores.append(rng.uniform(0.3, 0.7))  # an uninformative encoder
    combiner = fit_combiner(scores, rows, "supported", [F.N_MISSING_CONTENT], fitted_on="toy rows")
    assert combiner.feature_weights[F.N_MISSING_CONTENT] < -1
    assert abs(combiner.model_weight) < abs(combiner.feature_weights[F.N_MISSING_CONTENT])
    with pytest.raises(ValueError, match="both classes"):
        fit_combiner([0.5], [rows[0]], "supported", [F.N_MISSING_CONTENT], fitted_on="")


def test_fit_combiner_keeps_every_feature_against_support() -> None:
    # Names missing from the context happen to mark *supported* rows here (a quirk of this toy
    # split); the fit may ignore the feature but never turn it into evidence for support.
    rng = random.Random(1)
    rows, scores = [], []
    for i in range(200):
        supported = i % 2 == 0
        output = "Paris Rome is big" if supported else "paris is big and new"
        rows.append({"output": output, "context": "paris is big and old",
                     "label": "supported" if supported else "hallucinated"})  # fmt: skip
        scores.append(rng.uniform(0.6, 0.9) if supported else rng.uniform(0.1, 0.4))
    features = [F.SHARE_MISSING_NAMES, F.SHARE_MISSING_CONTENT]
    combiner = fit_combiner(scores, rows, "supported", features, fitted_on="toy rows")
    assert combiner.feature_weights[F.SHARE_MISSING_NAMES] <= 0.0
    assert combiner.feature_weights[F.SHARE_MISSING_CONTENT] <= 0.0
    assert combiner.model_weight > 0.5  # the encoder separates these rows: it carries the fit


def test_fit_combiner_lets_a_feature_for_support_count_only_for_it() -> None:
    # Stated sentences mark supported rows the encoder doubts: the weight lifts them. Where (a
    # quirk of a toy split) they mark hallucinated rows, the weight stays >= 0, never against support.
    rows, scores = [], []
    context = "Gift cards cannot be returned. Orders can be returned within 30 days."
    for i in range(200):
        supported = i % 2 == 0
        output = "No, gift cards cannot be returned." if supported else "Yes, gift cards can be returned."
        rows.append(
            {"output": output, "context": context, "label": "supported" if supported else "hallucinated"}
        )
        scores.append(0.3 if supported else 0.5)  # the encoder has them backwards
    combiner = fit_combiner(scores, rows, "supported", [F.SHARE_STATED_SENTENCES], fitted_on="toy rows")
    assert combiner.feature_weights[F.SHARE_STATED_SENTENCES] > 1.0
    quirk = [  # here the stated sentence is the hallucinated one: unconstrained, its weight goes negative
        dict(
            r,
            output="Gift cards cannot be returned." if r["label"] == "hallucinated" else "Returns are free.",
        )
        for r in rows
    ]
    flipped = fit_combiner(
        [0.6 if i % 2 == 0 else 0.4 for i in range(200)], quirk, "supported", [F.SHARE_STATED_SENTENCES],
        fitted_on="toy rows",
    )  # fmt: skip
    assert flipped.feature_weights[F.SHARE_STATED_SENTENCES] >= 0.0


@pytest.mark.parametrize(
    ("output", "share"),
    [
        ("No, gift cards cannot be returned.", 1.0),  # the context's sentence, its polarity kept
        ("Yes, gift cards can be returned.", 0.0),  # reversed
        ("Store cards cannot be returned.", 0.0),  # a swapped word
        ("Gift cards cannot be returned within 30 days.", 0.0),  # words of two sentences together
        ("Gift cards cannot be returned. Shipping is free.", 0.5),
    ],
)
def test_share_stated_sentences_counts_sentences_the_context_states_whole(output: str, share: float) -> None:
    context = "Gift cards cannot be returned. Orders can be returned within 30 days."
    assert evidence_features(output, context, [F.SHARE_STATED_SENTENCES]) == {
        F.SHARE_STATED_SENTENCES: pytest.approx(share)
    }


def test_fit_combiner_weighs_every_group_the_same() -> None:
    # 300 rows where missing words mean nothing, 20 where they decide: ungrouped, the large group
    # outvotes the small one; grouped, the small group's evidence gets its weight.
    rng = random.Random(2)
    rows, scores, groups = [], [], []
    for i in range(300):
        supported = i % 2 == 0
        rows.append({"output": "paris is big" + (" oslo" if i % 4 < 2 else ""), "context": "paris is big",
                     "label": "supported" if supported else "hallucinated"})  # fmt: skip
        scores.append(rng.uniform(0.6, 0.9) if supported else rng.uniform(0.1, 0.4))
        groups.append("large")
    for i in range(20):
        supported = i % 2 == 0
        rows.append({"output": "paris is big" + ("" if supported else " rome"), "context": "paris is big",
                     "label": "supported" if supported else "hallucinated"})  # fmt: skip
        scores.append(0.5)
        groups.append("small")
    features = [F.SHARE_MISSING_CONTENT]
    plain = fit_combiner(scores, rows, "supported", features, fitted_on="toy")
    grouped = fit_combiner(scores, rows, "supported", features, fitted_on="toy", groups=groups)
    assert (
        grouped.feature_weights[F.SHARE_MISSING_CONTENT] < plain.feature_weights[F.SHARE_MISSING_CONTENT] <= 0
    )


def test_evidence_features_compute_only_what_is_wanted() -> None:
    output, context = (
        "Ada wrote 3 notes in 1843. She met Babbage.",
        "Ada Lovelace wrote notes in 1843 on the engine.",
    )
    everything = evidence_features(output, context)
    assert set(everything) == set(F)
    for wanted in ([F.N_MISSING_CONTENT], [F.SHARE_NOVEL_BIGRAMS, F.SHARE_MISSING_NUMBERS]):
        some = evidence_features(output, context, wanted)
        assert some == {f: everything[f] for f in wanted}


REFUND = (
    "Orders can be returned within 30 days of delivery for a full refund. Refunds are paid to the original"
    " payment method within 5 business days. Gift cards cannot be returned."
)
DOSE = (
    "Adults and children over 12 years: take 1 or 2 tablets every 4 to 6 hours as needed. Do not take more"
    " than 8 tablets in 24 hours. Children under 12 years should not take this medicine."
)


@pytest.mark.parametrize(
    ("output", "context", "share"),
    [
        ("No, gift cards cannot be returned.", REFUND, 0.0),  # negated like its source sentence
        ("Yes, gift cards can be returned for a refund.", REFUND, 1.0),  # the source says they cannot
        ("Orders are not returnable within 30 days of delivery.", REFUND, 1.0),
        ("No. Children under 12 years should not take this medicine.", DOSE, 0.0),
        # "Yes." shares no words with the context (judged, not flipped); the second sentence's closest
        # source is the one about children under 12 (most overlap as a share), which is negated
        ("Yes. Children over 6 years can take this medicine safely.", DOSE, 0.5),
        ("The tablets are blue.", DOSE, 0.0),  # one shared word: no source to compare with
        ("", DOSE, 0.0),
    ],
)
def test_share_polarity_flipped_finds_reversed_statements(output: str, context: str, share: float) -> None:
    features = evidence_features(output, context, [F.SHARE_POLARITY_FLIPPED])
    assert features == {F.SHARE_POLARITY_FLIPPED: pytest.approx(share)}


@pytest.mark.parametrize(
    ("output", "context", "share"),
    [
        ("You can return an order within 90 days of delivery.", REFUND, 1.0),  # 30 days in the context
        ("You can return an order within 30 days of delivery.", REFUND, 0.0),
        ("Yes. Children over 6 years can take this medicine safely.", DOSE, 1.0),  # only 12 years stated
        ("An adult can take up to 12 tablets in 24 hours.", DOSE, 0.5),  # 24 hours stated, 12 tablets not
        ("Take 2 tablets; 1,000 tablets were sold in 2015.", "Take 2 tablets. We sold 1000 tablets.", 0.0),
        ("Refunds take 5 working days.", REFUND, 0.0),  # "working" is not a unit the context counts
        ("The 21-year-old McIlroy won by 4 shots.", "McIlroy, 25, won by 3 strokes.", 0.0),  # no shared unit
        ("No numbers here.", REFUND, 0.0),
    ],
)
def test_share_changed_quantities_finds_a_number_changed_beside_its_unit(
    output: str, context: str, share: float
) -> None:
    features = evidence_features(output, context, [F.SHARE_CHANGED_QUANTITIES])
    assert features == {F.SHARE_CHANGED_QUANTITIES: pytest.approx(share)}


def test_missing_content_up_to_2_counts_one_swapped_fact_whatever_the_length() -> None:
    context = "The museum opens at 9 am on weekdays and entry costs 12 euros for adults with a ticket."
    feature = F.MISSING_CONTENT_UP_TO_2
    short_swap = "The museum opens at 10 am."
    long_swap = "The museum opens at 9 am on weekdays and entry costs 15 euros for adults with a ticket."
    assert evidence_features("The museum opens at 9 am.", context, [feature]) == {feature: 0.0}
    assert evidence_features(short_swap, context, [feature]) == {feature: 0.5}
    assert evidence_features(long_swap, context, [feature]) == {feature: 0.5}  # a share would be 1/11
    assert evidence_features("The zoo opens at 10 am.", context, [feature]) == {feature: 1.0}


DOCUMENT = (
    "Anna Berg founded the bakery in Oslo in 1990. It sold bread to the harbour workers every morning. "
    "The city council later widened the harbour road. Many shops on the road closed during the works. "
    "A storm flooded the bakery's cellar in 2004. Berg then moved the ovens to the upper floor. "
    "Her son took over the bakery in 2015 and added a cafe."
)


def test_local_missing_share_finds_words_brought_together_from_far_apart() -> None:
    feature = F.LOCAL_MISSING_SHARE
    faithful = "A storm flooded the bakery's cellar in 2004, so Berg moved the ovens upstairs."
    # every content word of this one is somewhere in the document, none of them where they belong
    recombined = "The city council flooded the harbour workers' cafe in 2015."
    assert evidence_features(faithful, DOCUMENT, [feature])[feature] < 0.25  # only "upstairs"
    whole = evidence_features(recombined, DOCUMENT, [F.SHARE_MISSING_CONTENT, feature])
    assert whole[F.SHARE_MISSING_CONTENT] == 0.0
    # its best source (the harbour workers' sentence and the council's) lacks flooded, cafe, 2015
    assert whole[feature] == pytest.approx(3 / 7)
    assert evidence_features("Yes.", DOCUMENT, [feature]) == {feature: 0.0}  # nothing to judge


def test_windowed_weights_serve_items_read_in_several_windows() -> None:
    from service.runtime.evidence import LogisticWeights

    windowed = LogisticWeights(model_weight=0.5, feature_weights={F.LOCAL_MISSING_SHARE: -3.0}, bias=0.1)
    combiner = EvidenceCombiner(
        model_weight=2.0, feature_weights={F.SHARE_MISSING_CONTENT: -1.0}, windowed=windowed
    )
    features = {F.SHARE_MISSING_CONTENT: 0.5, F.LOCAL_MISSING_SHARE: 0.25}
    p, logit = 0.8, math.log(4)
    assert combiner.combine(p, features) == pytest.approx(1 / (1 + math.exp(-(2 * logit - 0.5))))
    windowed_z = 0.5 * logit - 3.0 * 0.25 + 0.1
    assert combiner.combine(p, features, windows=3) == pytest.approx(1 / (1 + math.exp(-windowed_z)))
    assert combiner.wanted() == {F.SHARE_MISSING_CONTENT, F.LOCAL_MISSING_SHARE}
    assert set(combiner.features({"output": "a b", "context": "a"})) == combiner.wanted()


def test_metric_model_uses_windowed_weights_for_a_long_context(tmp_path: Path) -> None:
    from service.runtime.evidence import LogisticWeights

    windowed = LogisticWeights(model_weight=0.0, feature_weights={F.N_MISSING_CONTENT: -2.0}, bias=1.0)
    combiner = EvidenceCombiner(
        model_weight=1.0, feature_weights={F.N_MISSING_CONTENT: -1.0}, bias=0.0, windowed=windowed
    )
    folder = write_counting_artifact(tmp_path / "repo", counting_spec(), tmp_path, evidence=combiner)
    model = MetricModel.load(folder)
    short, long = model.score(
        [
            {"output": "good berlin", "context": "paris"},
            {"output": "good berlin", "context": " ".join(["x"] * 150) + " paris"},
        ]
    )
    assert short.windows == 1 and long.windows > 1
    p = expected_score(1, 0)
    assert short.score == pytest.approx(1 / (1 + math.exp(-(math.log(p / (1 - p)) - 2))))
    assert long.score == pytest.approx(1 / (1 + math.exp(-(1.0 - 4.0))))  # the encoder ignored


def test_fit_combiner_fits_windowed_rows_on_their_own() -> None:
    # Short rows: the encoder decides. Windowed rows: the encoder is noise, missing words decide.
    rng = random.Random(3)
    rows, scores, windows = [], [], []
    for i in range(400):
        supported = i % 2 == 0
        long = i % 4 >= 2
        if long:
            output = "paris is big" + ("" if supported else " oslo rome")
            scores.append(rng.uniform(0.2, 0.8))
        else:
            output = "paris is big" + (" oslo" if rng.random() < 0.5 else "")
            scores.append(rng.uniform(0.6, 0.9) if supported else rng.uniform(0.1, 0.4))
        rows.append({"output": output, "context": "paris is big",
                     "label": "supported" if supported else "hallucinated"})  # fmt: skip
        windows.append(4 if long else 1)
    combiner = fit_combiner(
        scores, rows, "supported", [F.SHARE_MISSING_CONTENT], fitted_on="toy", windows=windows,
        windowed_features=[F.SHARE_MISSING_CONTENT],
    )  # fmt: skip
    assert combiner.windowed is not None
    assert combiner.model_weight > 1 > combiner.windowed.model_weight
    assert combiner.windowed.feature_weights[F.SHARE_MISSING_CONTENT] < -1
    alone = fit_combiner(
        scores, rows, "supported", [F.SHARE_MISSING_CONTENT], fitted_on="toy", windows=[1] * len(rows),
        windowed_features=[F.SHARE_MISSING_CONTENT],
    )  # fmt: skip
    assert alone.windowed is None and "one set of weights for all items" in alone.fitted_on


def test_every_evidence_feature_is_explained_on_the_model_card() -> None:
    """A card that lists a combiner's features must say what each one measures."""
    from models.model_card import FEATURE_MEANINGS

    assert set(FEATURE_MEANINGS) == set(F)
