"""The label contract shared by the model build, the Triton config and the router.

The router never trusts these lists at run time: it reads the label names from the
Triton model config (``parameters``) so it cannot disagree with the model it talks to.
They live here so the build and the committed ``config.pbtxt`` come from one source.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "biology",
    "business",
    "chemistry",
    "computer science",
    "economics",
    "engineering",
    "health",
    "history",
    "law",
    "math",
    "other",
    "philosophy",
    "physics",
    "psychology",
)

PII_TYPES: tuple[str, ...] = (
    "AGE",
    "CREDIT_CARD",
    "DATE_TIME",
    "DOMAIN_NAME",
    "EMAIL_ADDRESS",
    "GPE",
    "IBAN_CODE",
    "IP_ADDRESS",
    "NRP",
    "ORGANIZATION",
    "PERSON",
    "PHONE_NUMBER",
    "STREET_ADDRESS",
    "TITLE",
    "US_DRIVER_LICENSE",
    "US_SSN",
    "ZIP_CODE",
)


def bio_tags(pii_types: tuple[str, ...] = PII_TYPES) -> tuple[str, ...]:
    """``O`` then ``B-X``/``I-X`` for each type, in type order."""
    tags = ["O"]
    for t in pii_types:
        tags += [f"B-{t}", f"I-{t}"]
    return tuple(tags)


PII_TAGS: tuple[str, ...] = bio_tags()

# Tensor names: the contract between the model, Triton and the router.
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
CATEGORY_LOGITS = "category_logits"
PII_LOGITS = "pii_logits"
EMBEDDING = "embedding"

MODEL_NAME = "semantic_router"
