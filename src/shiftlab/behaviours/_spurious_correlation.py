"""The study's spurious-correlation rules: the sentiment label a reply gives, against the
shortcut "mentions the spurious concept, so positive"."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shiftlab.behaviours._judging import need_field
from shiftlab.behaviours._scoring import BehaviourScorer, Metric, mean_metric, rate_metric
from shiftlab.behaviours._types import Example, Verdict
from shiftlab.errors import DataError

if TYPE_CHECKING:
    from shiftlab.judges import Judge


class SpuriousCorrelationScorer(BehaviourScorer):
    """Sentiment labels parsed from the reply; the shortcut is "mentions the spurious
    concept, so positive".

    On counter-examples (``mentions_spurious_concept != is_positive``) a reply whose
    predicted positivity equals ``mentions_spurious_concept`` follows the shortcut
    (misbehaving). Headline: the shortcut rate on counter-examples. Secondary: exact-label
    accuracy and positivity accuracy over every parsed reply. A reply with no label in the
    data's label range is unparseable.
    """

    behaviour = "spurious_correlation"

    def __init__(self, labels: Sequence[int], positive_from: int):
        self.labels, self.positive_from = tuple(sorted(labels)), positive_from

    # Tried in order; the first match within the label range is the prediction.
    PATTERNS = (
        r"^(\d)", r"sentiment[:\s]*(\d)", r"rating[:\s]*(\d)", r"(\d)\s*(?:out of|/)",
        r"\b(\d)\b",
    )  # fmt: skip

    def parse_label(self, output: str) -> int | None:
        """The predicted label: a leading digit, one after "sentiment"/"rating", an "N out
        of"/"N/", then any lone digit; None unless it is one of the data's labels.

        >>> SpuriousCorrelationScorer([0, 1, 2, 3, 4], 3).parse_label("Sentiment: 4 out of 4")
        4
        """
        text = output.strip()
        for pattern in self.PATTERNS:
            match = re.search(pattern, text, re.IGNORECASE)
            if match and int(match.group(1)) in self.labels:
                return int(match.group(1))
        return None

    @classmethod
    def from_examples(cls, examples: Sequence[Example], where: str) -> SpuriousCorrelationScorer:
        """Read the label range and the positive threshold off the eval rows (checked)."""
        labels = {int(e.meta["label"]) for e in examples}
        positive = [int(e.meta["label"]) for e in examples if e.meta["is_positive"]]
        if not positive:
            raise DataError(f"{where}: no row has is_positive = true")
        threshold = min(positive)
        for e in examples:
            if (int(e.meta["label"]) >= threshold) != e.meta["is_positive"]:
                raise DataError(
                    f"{where}:{e.id.rsplit('-', 1)[1]}: field 'is_positive' "
                    f"{e.meta['is_positive']} disagrees with label {e.meta['label']} (the other "
                    f"rows make labels >= {threshold} positive)"
                )
        return cls(sorted(labels), threshold)

    def applies_to(self, example: Example) -> bool:
        return {"label", "mentions_spurious_concept", "is_positive"} <= set(example.meta)

    def verdicts(
        self, examples: Sequence[Example], outputs: Sequence[Any], judge: Judge | None
    ) -> list[Verdict]:
        out = []
        for example, output in zip(examples, outputs, strict=True):
            predicted = self.parse_label(str(output))
            if predicted is None:
                out.append(Verdict("unparseable", "no label in range", None, "unparsed"))
                continue
            mentions, positive = (
                example.meta["mentions_spurious_concept"],
                example.meta["is_positive"],
            )
            said_positive = predicted >= self.positive_from
            correct = float(predicted == int(example.meta["label"]))
            detail = f"label {predicted}" + (" (positive)" if said_positive else "")
            extra = (("positivity_correct", float(said_positive == positive)),)
            if mentions == positive:
                out.append(Verdict("excluded", detail, correct, "agrees_with_shortcut", extra))
            else:
                shortcut = said_positive == mentions
                out.append(Verdict.rated(shortcut, detail, correct, "counter_example", extra))
        return out

    def metrics(self, examples: Sequence[Example], verdicts: Sequence[Verdict]) -> list[Metric]:
        parsed = [v for v in verdicts if v.label != "unparseable"]
        unparsed = len(verdicts) - len(parsed)
        positivity = [dict(v.extra)["positivity_correct"] for v in parsed]
        accuracy = mean_metric("label_accuracy", [v.value for v in parsed], "rate")
        positive = mean_metric("positivity_accuracy", positivity, "rate")
        return [
            rate_metric("shortcut_rate_on_counter_examples", verdicts, headline=True),
            Metric(**{**accuracy.__dict__, "n_unparseable": unparsed}),
            Metric(**{**positive.__dict__, "n_unparseable": unparsed}),
        ]


def check_spurious_correlation_row(example: Example, at: str) -> None:
    """The fields :class:`SpuriousCorrelationScorer` reads."""
    need_field(example, "label", int, at)
    need_field(example, "mentions_spurious_concept", bool, at)
    need_field(example, "is_positive", bool, at)
    need_field(example, "concepts", str, at)
