"""Moderation with ``profanity_check`` (alt-profanity-check), in OpenAI's shape.

profanity_check is a linear SVM over TF-IDF features trained on offensive-language
data (abusive/toxic comments and tweets). It yields one number: the probability
that a text is offensive. That is reported, honestly, as **one** OpenAI category
(``harassment`` by default: abusive language aimed at someone is the bulk of what
the model was trained to catch); every other category is reported as not flagged
with a score of 0.0 because nothing scored it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batchd.backends.local.config import ModerationModelConfig

JSON = dict[str, Any]

OMNI_CATEGORIES: tuple[str, ...] = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
"""The categories of ``omni-moderation-latest``."""

TEXT_CATEGORIES: tuple[str, ...] = tuple(c for c in OMNI_CATEGORIES if not c.startswith("illicit"))
"""The categories of the older ``text-moderation-latest``."""


class ProfanityModel:
    """profanity_check's vectorizer and classifier (imported in the worker thread:
    loading them takes a moment and pulls in scikit-learn)."""

    def __init__(self) -> None:
        import profanity_check

        self._predict_prob = profanity_check.predict_prob

    def scores(self, texts: Sequence[str]) -> list[float]:
        """Probability that each text is offensive, in order."""
        return [float(p) for p in self._predict_prob(list(texts))]


def result(score: float, config: ModerationModelConfig) -> JSON:
    """One entry of ``results`` for a text with profanity probability ``score``."""
    omni = config.categories == "omni"
    names = OMNI_CATEGORIES if omni else TEXT_CATEGORIES
    scored = config.scored_category
    flagged = score >= config.threshold
    out: JSON = {
        "flagged": flagged,
        "categories": {c: (flagged if c == scored else False) for c in names},
        "category_scores": {c: (score if c == scored else 0.0) for c in names},
    }
    if omni:
        out["category_applied_input_types"] = {c: ["text"] for c in names}
    return out
