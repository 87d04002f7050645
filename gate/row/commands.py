"""Station → lane commands, signed end to end, and the lane's checks before it acts.

A command names the lane, the case, the officer, the operation, a single-use nonce the
lane issued when it referred the traveller (it travels to the station with the case), the
moment it was issued and its own id; the station signs its canonical JSON with Ed25519.
The lane acts only when every check holds, in this order, each failure a named refusal:

1. ``COMMAND_MALFORMED``        not a command this lane understands;
2. ``COMMAND_SIGNATURE_INVALID`` not signed by the pinned station key;
3. ``COMMAND_WRONG_LANE``       addressed to another lane;
4. ``COMMAND_EXPIRED``          issued more than ``max_age_s`` ago (or in the future):
                                a command delivered late must not act;
5. ``COMMAND_NONCE_UNKNOWN``    the nonce is not one this lane issued for that case, or
                                it was used already (one release per referral);
6. ``COMMAND_NOT_CURRENT``      the case is not the traveller in the lane now;
7. the lane's own guard (``release_exit``): its refusal code, e.g. ``ZONE_NOT_ONE``.

A repeated command (same command id) gets the first answer again and does nothing again.
Nothing here touches the network: :mod:`gate.row.link` carries the bytes.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

OPERATIONS = ("release", "refer")

COMMAND_MALFORMED = "COMMAND_MALFORMED"
COMMAND_SIGNATURE_INVALID = "COMMAND_SIGNATURE_INVALID"
COMMAND_WRONG_LANE = "COMMAND_WRONG_LANE"
COMMAND_EXPIRED = "COMMAND_EXPIRED"
COMMAND_NONCE_UNKNOWN = "COMMAND_NONCE_UNKNOWN"
COMMAND_NOT_CURRENT = "COMMAND_NOT_CURRENT"
LANE_UNREACHABLE = "LANE_UNREACHABLE"
#: a command older than this when the lane gets it is refused (seconds)
DEFAULT_MAX_AGE_S = 3.0
_REMEMBERED = 1000


def check_lane_id(lane: str) -> str:
    """A lane id names the lane's bus subjects: letters, digits, '-' and '_' only."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", lane):
        raise ValueError(f"lane id {lane!r}: 1-64 letters, digits, '-' and '_' (it names "
                         "the lane's subjects on the row's bus)")
    return lane


@dataclass(frozen=True)
class Command:
    lane: str
    case_id: str
    officer: str
    op: str
    nonce: str
    issued_at: float
    command_id: str

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Answer:
    """The lane's answer: whether it acted, and why not."""

    acted: bool
    reason: str | None = None
    lane: str = ""
    case_id: str = ""
    command_id: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Answer:
        raw = json.loads(data)
        return cls(bool(raw["acted"]), raw.get("reason"), str(raw.get("lane", "")),
                   str(raw.get("case_id", "")), str(raw.get("command_id", "")))


class StationSigner:
    """The station's Ed25519 key: signs commands."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> StationSigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes) -> StationSigner:
        key = load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the station key is not an Ed25519 private key")
        return cls(key)

    def private_pem(self) -> bytes:
        return self._key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(Encoding.PEM,
                                                   PublicFormat.SubjectPublicKeyInfo)

    def command(self, lane: str, case_id: str, officer: str, op: str, nonce: str,
                now: float | None = None) -> bytes:
        """A signed command, ready to send."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown operation {op!r}")
        cmd = Command(lane, case_id, officer, op, nonce,
                      time.time() if now is None else now, uuid.uuid4().hex)
        return encode(cmd, self._key.sign(cmd.canonical()))


def encode(cmd: Command, signature: bytes) -> bytes:
    return json.dumps({"command": asdict(cmd),
                       "signature": base64.b64encode(signature).decode()}).encode()


def decode(data: bytes) -> tuple[Command, bytes]:
    """(command, signature); ValueError when it is not a command."""
    try:
        raw = json.loads(data)
        body = raw["command"]
        cmd = Command(str(body["lane"]), str(body["case_id"]), str(body["officer"]),
                      str(body["op"]), str(body["nonce"]), float(body["issued_at"]),
                      str(body["command_id"]))
        signature = base64.b64decode(raw["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a command: {type(exc).__name__}") from None
    if cmd.op not in OPERATIONS or not cmd.command_id or not cmd.nonce:
        raise ValueError("not a command: unknown operation or empty id")
    return cmd, signature


def load_station_key(pem: bytes) -> Ed25519PublicKey:
    key = load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the station key is not an Ed25519 public key")
    return key


#: the lane's own guard: (case id, officer, operation) -> None when it acted, else its
#: refusal code
LaneAction = Callable[[str, str, str], str | None]


class LaneCommands:
    """The lane's side: issues nonces with its referrals, checks and runs commands."""

    def __init__(self, lane_id: str, station_key: Ed25519PublicKey, act: LaneAction,
                 current_case: Callable[[], str | None], *,
                 max_age_s: float = DEFAULT_MAX_AGE_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.lane_id, self._key, self._act = lane_id, station_key, act
        self._current, self._max_age, self._clock = current_case, max_age_s, clock
        self._nonces: OrderedDict[str, str] = OrderedDict()  # nonce -> case id
        self._answers: OrderedDict[str, Answer] = OrderedDict()  # command id -> answer
        self._lock = threading.Lock()

    def issue_nonce(self, case_id: str) -> str:
        """A single-use nonce for a referral; it goes to the station with the case."""
        nonce = secrets.token_urlsafe(18)
        with self._lock:
            self._nonces[nonce] = case_id
            while len(self._nonces) > _REMEMBERED:
                self._nonces.popitem(last=False)
        return nonce

    def handle(self, data: bytes) -> Answer:
        """Check one command and run it if every check holds; never raises."""
        try:
            cmd, signature = decode(data)
        except ValueError:
            return Answer(False, COMMAND_MALFORMED, self.lane_id)
        with self._lock:  # one command at a time: two releases cannot both pass
            first = self._answers.get(cmd.command_id)
            if first is not None:
                return first  # a repeated command: the first answer, nothing done again
            answer = self._check_and_run(cmd, signature)
            if answer.reason != COMMAND_SIGNATURE_INVALID:  # a forger cannot fill it
                self._answers[cmd.command_id] = answer
                while len(self._answers) > _REMEMBERED:
                    self._answers.popitem(last=False)
            return answer

    def _check_and_run(self, cmd: Command, signature: bytes) -> Answer:
        def refuse(reason: str) -> Answer:
            return Answer(False, reason, self.lane_id, cmd.case_id, cmd.command_id)

        try:
            self._key.verify(signature, cmd.canonical())
        except InvalidSignature:
            return refuse(COMMAND_SIGNATURE_INVALID)
        if cmd.lane != self.lane_id:
            return refuse(COMMAND_WRONG_LANE)
        age = self._clock() - cmd.issued_at
        if not -1.0 <= age <= self._max_age:  # 1 s of clock skew the other way
            return refuse(COMMAND_EXPIRED)
        if self._nonces.get(cmd.nonce) != cmd.case_id:
            return refuse(COMMAND_NONCE_UNKNOWN)
        del self._nonces[cmd.nonce]  # single use, whatever the guard says next
        if self._current() != cmd.case_id:
            return refuse(COMMAND_NOT_CURRENT)
        refusal = self._act(cmd.case_id, cmd.officer, cmd.op)
        if refusal is not None:
            return refuse(refusal)
        return Answer(True, None, self.lane_id, cmd.case_id, cmd.command_id)


def answer_record(answer: Answer) -> dict[str, Any]:
    """What the station's audit chain keeps of an answer."""
    return asdict(answer)
