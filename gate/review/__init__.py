"""Officers' review of what a lane could not decide alone.

The lane's side: build a :class:`CaseInput` and hand it to a :class:`CaseSpool`
(durable, never raises, never waits on the store). The officers' side:
:func:`create_app` serves the review web app over a :class:`CaseStore`, reaching the
lanes only through a :class:`LaneControl`. See docs/review.md.
"""

from gate.review.cases import CASE_KINDS, CaseInput, LaneControl, mask_document_number
from gate.review.crypto import ImageSeal, KeyMismatch, KeyMissing, SealError
from gate.review.queue import CaseSpool
from gate.review.store import CaseStore, SealedCase, StoreUnavailable, seal_case

__all__ = [
    "CASE_KINDS",
    "CaseInput",
    "CaseSpool",
    "CaseStore",
    "ImageSeal",
    "KeyMismatch",
    "KeyMissing",
    "LaneControl",
    "SealError",
    "SealedCase",
    "StoreUnavailable",
    "mask_document_number",
    "seal_case",
]
