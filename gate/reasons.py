"""Every reason code the lane can name, in one registry: what it means and who emits it.

A reason code is an upper-case string that says *why* something happened: why a document
was refused (``EXPIRED``), why a face capture gave up (``CAMERA_FAILED``), why the lane
went out of service (``LINK_DOWN``), how a passage ended (the :class:`gate.lane.Outcome`
values). Codes are emitted where they arise — the document stage, the face stage, the lane,
the device drivers — and this module is where they are all listed, each with one line for
officers and maintenance staff.

Some codes are built at run time from a fixed prefix and a variable part
(``TIMEOUT_IN_REJECTED``, ``RELEASE_REFUSED:TAILGATING``,
``DOCUMENT_STAGE_ERROR:ValueError``); such a *family* is registered once, by its prefix,
with ``family=True``, and :func:`known` matches it by prefix.

This is pure data and imports nothing of the lane: ``tests/test_reasons.py`` checks it
against the code (every code the product emits is registered, every registered code is
still emitted), against the shipped scenarios and against the reason tables of the docs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Stage = Literal["document", "face", "chip", "lane", "device", "row", "outcome"]
STAGES: tuple[Stage, ...] = ("document", "face", "chip", "lane", "device", "row", "outcome")


@dataclass(frozen=True)
class Reason:
    """One reason code (or, with ``family``, the prefix of a family of codes)."""

    code: str
    stage: Stage  # who emits it; "outcome": a gate.lane.Outcome value (may be a reason too)
    meaning: str  # one line for officers and maintenance staff
    family: bool = False  # ``code`` is a prefix: TIMEOUT_IN_<STATE>, RELEASE_REFUSED:<WHY>


def _document() -> list[Reason]:
    def r(code: str, meaning: str) -> Reason:
        return Reason(code, "document", meaning)

    return [
        # the frame itself (gate.document.reader)
        r("IMAGE_UNREADABLE", "the image could not be decoded (not JPEG, PNG or JPEG 2000, "
                              "corrupt, not 8-bit)"),
        r("IMAGE_EMPTY", "the page image is empty"),
        r("IMAGE_TOO_SMALL", "the page image is too small to read (shorter side under 200 px)"),
        r("IMAGE_TOO_LARGE", "the page image is over 50 megapixels (refused before decoding)"),
        # an image file of any command or reader (hardware.images, before any decoding)
        r("IMAGE_FORMAT_UNSUPPORTED", "a JPEG, PNG or JPEG 2000 of a kind no lane needs "
                                      "(animated, lossless, > 4 channels)"),
        r("IS_A_DIRECTORY", "an input path is a directory, not an image file"),
        r("NOT_A_REGULAR_FILE", "an input path is a FIFO, device or socket, not a regular file"),
        r("FILE_UNREADABLE", "an input file cannot be opened or read (permission, I/O error)"),
        r("FILE_TOO_LARGE", "an input file is over 64 MiB (refused without reading it)"),
        r("TOO_MANY_IMAGES", "more image files in one call than allowed (10)"),
        r("TOO_MANY_PIXELS", "the images of one call declare over 100 megapixels together"),
        # reading the MRZ (gate.document.reader): the traveller should try again
        r("MRZ_NOT_FOUND", "no machine readable zone in view: lay the data page flat"),
        r("MULTIPLE_DOCUMENTS", "more than one document in view"),
        r("MRZ_INCOMPLETE", "the machine readable zone is partly covered or cut off"),
        r("MRZ_UNSTABLE", "the frames of the page disagree on the MRZ"),
        r("NAME_LOW_CONFIDENCE", "a name character was read unsure (no check digit covers names)"),
        r("MRZ_LOW_CONFIDENCE", "a character outside the name was read unsure"),
        # ICAO 9303 validation (hardware.docreader.mrz); MRZ_INVALID sums them up
        r("MRZ_INVALID", "the MRZ fails ICAO 9303 validation (the other reasons say how)"),
        r("MRZ_PARSE_ERROR", "the MRZ parser failed internally (a bug, named instead of raised)"),
        r("MRZ_BAD_CHARACTERS", "the MRZ holds characters other than A-Z, 0-9 and <"),
        r("MRZ_EMPTY", "the MRZ text is empty"),
        r("MRZ_FORMAT_UNKNOWN", "the MRZ lines fit no ICAO layout (TD1, TD2, TD3, MRV-A, MRV-B)"),
        r("DOCUMENT_TYPE_INVALID", "the document code does not fit the MRZ layout"),
        r("ISSUING_STATE_UNKNOWN", "the issuing state is not a known ICAO code"),
        r("NATIONALITY_UNKNOWN", "the nationality is not a known ICAO code"),
        r("NAME_INVALID", "the name field is empty or malformed"),
        r("SEX_INVALID", "the sex field is not M, F, X or <"),
        r("DATE_OF_BIRTH_INVALID", "the date of birth is not a real date"),
        r("DATE_OF_EXPIRY_INVALID", "the expiry date is not a real date"),
        r("DATE_OF_EXPIRY_UNKNOWN", "the expiry date is left blank (Doc 9303 has no unknown "
                                    "expiry)"),
        r("DOCUMENT_NUMBER_INVALID", "the document number is empty or malformed"),
        r("CHECK_DOCUMENT_NUMBER", "the check digit of the document number fails"),
        r("CHECK_DATE_OF_BIRTH", "the check digit of the date of birth fails"),
        r("CHECK_DATE_OF_EXPIRY", "the check digit of the expiry date fails"),
        r("CHECK_OPTIONAL_DATA", "the check digit of the optional data fails"),
        r("CHECK_COMPOSITE", "the composite check digit fails"),
        r("DOCUMENT_NUMBER_CHECK_VARIANT", "warning, MRZ valid: a BEL/PRT card's long number "
          "check digit covers the filler at 15"),
        # eligibility policy (gate.document.policy, the lane's [document] section)
        r("DOCUMENT_TYPE_NOT_ALLOWED", "this lane does not take this document type or layout"),
        r("EXPIRY_UNKNOWN", "no valid expiry date, so validity cannot be judged"),
        r("EXPIRED", "the document has expired"),
        r("EXPIRES_SOON", "the document expires within the lane's minimum validity"),
        r("EXPIRY_IMPLAUSIBLE", "the expiry is later than any passport runs (10 years and "
          "a margin): misread or forged"),
        r("SPECIMEN_DOCUMENT", "issued by or for UTO, the ICAO specimen state: no travel "
          "document"),
        r("AGE_UNKNOWN", "no valid date of birth, so the minimum age cannot be judged"),
        r("DATE_OF_BIRTH_UNKNOWN", "the document gives the date of birth as unknown: an "
          "officer sees the holder"),
        r("UNDER_MINIMUM_AGE", "the holder is under this lane's minimum age"),
        r("NATIONALITY_NOT_ALLOWED", "this lane does not serve the holder's nationality"),
        r("DOCUMENT_LISTED", "the document number is on the lane's list (lost, stolen)"),
        # the portrait (gate.document.photo)
        r("PORTRAIT_NOT_FOUND", "no face found in the portrait region of the document"),
        r("PORTRAIT_TOO_SMALL", "the face in the document portrait is too small to compare"),
        # the stage as a whole (gate.document.check) and its command (gate document)
        r("DOCUMENT_CHECK_FAILED", "the document stage failed internally (see the log)"),
        r("FILE_NOT_FOUND", "an input file does not exist (gate document, gate verify)"),
    ]


def _face() -> list[Reason]:
    def r(code: str, meaning: str) -> Reason:
        return Reason(code, "face", meaning)

    return [
        # live capture (gate.face.capture); FACE_NOT_CAPTURED is listed with the outcomes
        r("CAMERA_FAILED", "the lane camera failed (unhealthy, or no new frame in time)"),
        r("CANCELLED", "the lane cancelled the face capture (the traveller or zone changed)"),
        # guidance keys shown to the traveller during capture (gate.face.quality)
        r("CAPTURING", "guidance: good frames are being collected, stay where you are"),
        r("STEP_CLOSER", "guidance: step closer to the camera"),
        r("STEP_BACK", "guidance: step back from the camera"),
        r("LOOK_AT_CAMERA", "guidance: look at the camera (no frontal face seen)"),
        r("ONE_PERSON_ONLY", "guidance: one person only in front of the camera"),
        r("HOLD_STILL", "guidance: hold still (the frame is blurred)"),
        r("MOVE_INTO_LIGHT", "guidance: move into the light (the face is badly exposed)"),
        r("UNCOVER_EYES", "guidance: uncover your eyes (glasses, hair, hand)"),
        # 1:1 verification (gate.face.verify)
        r("NO_FACE_IN_DOCUMENT", "no face to compare in the document portrait"),
        r("NO_FACE_IN_LIVE", "no face to compare in the live frames"),
        r("SCORE_BELOW_THRESHOLD", "the live face does not match the document portrait"),
        r("PRESENTATION_ATTACK", "attack detection found the live face not bona fide"),
        # its command (gate verify)
        r("UNREADABLE_IMAGE", "gate verify: an input image could not be read"),
        r("FACE_PACK_UNAVAILABLE", "gate verify: the face model pack could not be loaded"),
        r("ARGUMENT_INVALID", "gate verify: an option is out of range (NaN threshold, FMR)"),
    ]


def _chip() -> list[Reason]:
    def r(code: str, meaning: str, family: bool = False) -> Reason:
        return Reason(code, "chip", meaning, family)

    return [
        # reaching and opening the chip (hardware.chip: reader, PACE/BAC, secure messaging)
        r("CHIP_READER_UNAVAILABLE", "out of service: the chip reader (or pcscd) is not "
          "there"),
        r("CHIP_ABSENT", "no chip answered in the reader's field (no chip, or not on the "
          "antenna)"),
        r("CHIP_NOT_RESPONDING", "a chip was detected but stopped answering (a mute chip)"),
        r("CHIP_ACCESS_DENIED", "neither PACE nor BAC opened the chip with the MRZ's keys"),
        r("CHIP_READ_FAILED", "the chip's files could not be read under secure messaging"),
        # the chip in the lane (gate.chip)
        r("CHIP_NOT_AUTHENTIC", "the chip is not authentic: the reasons after it say why"),
        r("CHIP_MISSING", "the page's MRZ gave no keys for the chip"),
        r("CHIP_TRUST_MISSING", "gate document --chip: no --trust PATH (a CSCA folder or "
          "master list) to authenticate the chip with"),
        r("CHIP_PORTRAIT_TIMEOUT", "the chip's portrait and chip authentication did not "
          "come in time"),
        r("CHIP_PORTRAIT_UNREADABLE", "the chip's portrait (DG2) cannot be decoded"),
        # passive authentication, the trust store, chip/active authentication
        # (hardware.chip.pa, hardware.chip.trust)
        r("LDS_MALFORMED:", "a file read from the chip is not what ICAO 9303-10 says: <file>",
          family=True),
        r("SOD_MISSING", "no EF.SOD was read: the chip's data cannot be authenticated"),
        r("SOD_MESSAGE_DIGEST_MISMATCH", "the SOD's messageDigest is not its content's hash"),
        r("SOD_SIGNATURE_INVALID", "the SOD's signature does not verify with its DS key"),
        r("SOD_ALGORITHM_UNSUPPORTED", "the SOD names a hash or signature algorithm not "
          "supported"),
        r("DG_HASH_MISMATCH:", "a data group read differs from its hash in the SOD: <DGn>",
          family=True),
        r("DG_NOT_IN_SOD:", "a data group was read that the SOD has no hash for: <DGn>",
          family=True),
        r("DS_CERTIFICATE_MISSING", "the SOD carries no document signer certificate"),
        r("DS_KEY_USAGE_INVALID", "the DS certificate is not for digital signatures only"),
        r("DS_EXPIRED", "the document signer certificate has expired"),
        r("DS_NOT_YET_VALID", "the document signer certificate is not valid yet"),
        r("DS_REVOKED", "the document signer certificate is on its CSCA's CRL"),
        r("DS_COUNTRY_MISMATCH", "the DS is not of the document's issuing state (or its "
          "CSCA's)"),
        r("CSCA_UNKNOWN", "no CSCA of the trust store issued the document signer"),
        r("CSCA_EXPIRED", "the CSCA that issued the document signer has expired"),
        r("CSCA_NOT_CA", "the issuing CSCA certificate is not a CA (basicConstraints, "
          "keyCertSign)"),
        r("CRL_MISSING", "no CRL of the DS's CSCA with a valid signature is in the trust "
          "store"),
        r("CRL_EXPIRED", "every CRL of the DS's CSCA is past its next update"),
        r("CRL_SIGNATURE_INVALID", "a CRL in the trust store does not verify with its CSCA's "
          "key"),
        r("DS_COUNTRY_UNCHECKED", "the issuing state has no known two-letter code to check "
          "the DS by"),
        r("DG1_MISSING", "DG1 was not read, so the chip's MRZ cannot be compared"),
        r("DG1_MRZ_MISMATCH", "the chip's MRZ (DG1) differs from the MRZ read from the page"),
        r("TRUST_STORE_MISSING", "out of service: the lane's trust store path does not exist"),
        r("TRUST_STORE_EMPTY", "out of service: the trust store holds no CSCA certificate"),
        r("TRUST_STORE_EXPIRED", "out of service: no CSCA of the trust store is valid now"),
        r("TRUST_FILE_UNREADABLE", "a trust store file is no certificate or CRL (skipped)"),
        r("MASTER_LIST_MALFORMED", "a CSCA master list is not CMS SignedData of a "
          "CscaMasterList"),
        r("MASTER_LIST_SIGNATURE_INVALID", "a CSCA master list's signature does not verify: "
          "refused"),
        r("MASTER_LIST_SIGNER_UNTRUSTED", "a master list's signer is expired or under no "
          "trusted CSCA"),
        r("LDIF_MALFORMED", "a PKD LDIF file or entry cannot be read (skipped)"),
        r("AA_NO_RESPONSE", "the chip did not answer INTERNAL AUTHENTICATE"),
        r("AA_SIGNATURE_INVALID", "active authentication failed: a cloned chip or a wrong key"),
        r("AA_KEY_NOT_AUTHENTICATED", "DG15's AA key is not bound to a trusted SOD"),
        r("CA_FAILED", "chip authentication with DG14's key failed: a cloned chip"),
        r("CA_KEY_NOT_AUTHENTICATED", "DG14's chip authentication key is not bound to a "
          "trusted SOD"),
        r("CHIP_AUTHENTICATION_NOT_PERFORMED", "the chip offers CA or AA but neither was run"),
        r("CHIP_AUTHENTICATION_UNAVAILABLE", "the chip offers neither CA nor AA (required "
          "here)"),
        r("PORTRAIT_MISSING", "DG2, the chip's portrait, was not read"),
    ]


def _lane() -> list[Reason]:
    def r(code: str, meaning: str, family: bool = False) -> Reason:
        return Reason(code, "lane", meaning, family)

    return [
        # the passage (gate.lane)
        r("ZONE_COUNT_ABOVE_ONE", "more than one person in the zone before release (tailgating)"),
        r("ZONE_OCCUPIED_BEFORE_ADMISSION", "somebody was in the zone before ENTRY opened"),
        r("NOBODY_ENTERED", "ENTRY opened for the traveller but nobody came in"),
        r("CAPTURE_TIMEOUT", "the face capture did not finish within its timeout"),
        r("OFFICER_RELEASE", "an officer reviewed the case and released the traveller"),
        r("OFFICER_RESET", "an officer reset the lane while the passage was open"),
        r("BOARD_RESTARTED", "the barrier board restarted during the passage"),
        r("OCCUPIED_AFTER_RECOVERY", "somebody was inside after a restart or outage: sent back"),
        # why the lane stops serving travellers (out of service or maintenance)
        r("LINK_DOWN", "the link to the barrier board is down"),
        r("MAINTENANCE_KEY", "the maintenance key is turned on the board"),
        r("OPERATOR", "an operator put the lane into maintenance"),
        r("SHUTDOWN", "the lane service is shutting down"),
        r("MAINS_LOST", "mains power lost, the board runs on UPS: nobody new is admitted"),
        r("WATCHDOG", "the board's watchdog tripped (the host did not poll in time)"),
        r("TAMPER", "the board reports tampering"),
        r("DOOR_FAULT", "a door is jammed or faulty"),
        # families: the prefix is fixed, the rest names the state, refusal or exception
        r("TIMEOUT_IN_", "the lane timed out in the named state", True),
        r("LEFT_BACKWARDS_FROM_", "the traveller went back out through ENTRY from the named "
                                  "state", True),
        r("RELEASE_REFUSED:", "the face matched but the safety guard kept EXIT shut", True),
        r("DOCUMENT_STAGE_ERROR:", "the document stage raised the named exception", True),
        r("CAPTURE_STAGE_ERROR:", "the face capture stage raised the named exception", True),
        r("VERIFY_STAGE_ERROR:", "the face verification stage raised the named exception",
          True),
        r("FAULT:", "the lane itself raised the named exception: an officer reset is needed",
          True),
    ]


def _device() -> list[Reason]:
    def r(code: str, meaning: str) -> Reason:
        return Reason(code, "device", meaning)

    return [
        # device health (hardware.device.DeviceHealth.reason): out of service before admission
        r("CAMERA_UNAVAILABLE", "the lane camera is not connected (cannot open, refused, lost)"),
        r("CAMERA_STALLED", "the lane camera is connected but delivers no frames"),
        r("CAMERA_ENDED", "the lane camera's video file played to its end"),
        r("READER_UNAVAILABLE", "the document reader cannot see its glass (gone, not started)"),
        r("DOCUMENTS_FAILED", "the document reader is unhealthy without a reason of its own"),
        r("PROBE_FAILED", "a device's health probe raised (reported on /metrics)"),
    ]


def _row() -> list[Reason]:
    def r(code: str, meaning: str, family: bool = False) -> Reason:
        return Reason(code, "row", meaning, family)

    return [
        # station -> lane commands, refused by the lane (gate.row.commands)
        r("COMMAND_MALFORMED", "the lane got something that is not a station command"),
        r("COMMAND_SIGNATURE_INVALID", "the command is not signed by the lane's pinned "
          "station key"),
        r("COMMAND_WRONG_LANE", "the command is addressed to another lane"),
        r("COMMAND_EXPIRED", "the command arrived too late (or dated ahead): it must not act"),
        r("COMMAND_NONCE_UNKNOWN", "the nonce is not this lane's for that case, or was used"),
        r("COMMAND_NOT_CURRENT", "the case is not the traveller in the lane now"),
        # the bus (gate.row.link)
        r("LANE_UNREACHABLE", "the lane's heartbeat stopped or it did not answer: the "
          "command was not sent"),
        r("NO_REFERRAL", "no referral waits at the lane for that case (the traveller "
          "left): not sent"),
        # the lane's supervision (gate.row.member)
        r("UNSUPERVISED", "out of service: no station heartbeat for the configured time "
          "(comes back with it)"),
    ]


def _outcome() -> list[Reason]:
    def r(code: str, meaning: str) -> Reason:
        return Reason(code, "outcome", meaning)

    return [
        r("PASSED", "the traveller passed through EXIT"),
        r("DOCUMENT_REJECTED", "the document was not accepted (its reasons say why)"),
        r("FACE_MISMATCH", "the live face was not matched to the document"),
        r("FACE_NOT_CAPTURED", "no usable live face within the capture window (also a reason)"),
        r("TAILGATING", "more than one person in the lane: alarm, all sent back"),
        r("TURNED_BACK", "the traveller went back out through ENTRY"),
        r("TIMEOUT", "the passage timed out (also the reason when a timeout stops the lane)"),
        r("OUT_OF_SERVICE", "the lane went out of service during the passage"),
        r("EMERGENCY", "emergency raised: both doors open for evacuation (also a cause)"),
        r("OFFICER_RELEASED", "an officer released the traveller after a rejection"),
    ]


def _index(reasons: list[Reason]) -> Mapping[str, Reason]:
    out: dict[str, Reason] = {}
    for reason in reasons:
        if reason.code in out:
            raise ValueError(f"reason code {reason.code} registered twice")
        if reason.stage not in STAGES:
            raise ValueError(f"reason code {reason.code}: unknown stage {reason.stage!r}")
        out[reason.code] = reason
    return MappingProxyType(out)


#: Every reason code, by code; families by their prefix.
REASONS: Mapping[str, Reason] = _index(
    [*_document(), *_face(), *_chip(), *_lane(), *_device(), *_row(), *_outcome()])

#: The prefixes of the families, longest first (the most specific one matches).
FAMILIES: tuple[str, ...] = tuple(sorted(
    (r.code for r in REASONS.values() if r.family), key=lambda p: (-len(p), p)))

#: What follows ``RELEASE_REFUSED:`` — why the safety guard kept EXIT shut.
RELEASE_REFUSALS: Mapping[str, str] = MappingProxyType({
    "NO_STATUS": "no board status to judge by",
    "NO_POSITIVE_DECISION": "no positive match decision or officer release for this passage",
    "TAILGATING": "more than one person was seen in the zone before release",
    "ZONE_NOT_ONE": "not exactly one person in the zone",
    "ENTRY_NOT_CLOSED": "ENTRY is not closed",
    "EMERGENCY": "emergency raised",
})


def lookup(code: str) -> Reason | None:
    """The registered reason for ``code``: its own entry, else its family's; None if neither.

    A family's bare prefix (``TIMEOUT_IN_``) is no code of its own and gives None.
    """
    reason = REASONS.get(code)
    if reason is not None:
        return None if reason.family else reason
    for prefix in FAMILIES:
        if code.startswith(prefix) and len(code) > len(prefix):
            return REASONS[prefix]
    return None


def known(code: str) -> bool:
    """True when ``code`` is a registered code or belongs to a registered family."""
    return lookup(code) is not None


def describe(code: str) -> str:
    """One line on what ``code`` means (for a family: with what follows its prefix)."""
    reason = lookup(code)
    if reason is None:
        return "unregistered reason code"
    if not reason.family:
        return reason.meaning
    rest = code[len(reason.code):]
    if reason.code == "RELEASE_REFUSED:" and rest in RELEASE_REFUSALS:
        return f"{reason.meaning}: {RELEASE_REFUSALS[rest]}"
    if reason.code in ("TIMEOUT_IN_", "LEFT_BACKWARDS_FROM_"):
        rest = rest.lower()  # the lane state, as gate.lane names it
    return f"{reason.meaning}: {rest}"


__all__ = ["FAMILIES", "REASONS", "RELEASE_REFUSALS", "STAGES", "Reason", "Stage", "describe",
           "known", "lookup"]
