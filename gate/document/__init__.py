"""The document stage: MRZ reading (OCR-B), ICAO 9303 validation, eligibility, portrait.

The lane uses :class:`gate.document.check.MrzDocumentCheck`; see ``docs/document.md``.
"""
