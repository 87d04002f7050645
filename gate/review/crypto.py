"""Sealing biometric and personal data at rest (AES-256-GCM).

The key lives in a file or the environment, never in the database, so a copied database
or spool holds nothing readable. Each sealed blob is bound to its case and slot (the
associated data), so a blob moved to another case or swapped between slots fails to open
instead of showing the wrong traveller. Each blob names the key it was sealed with (an
8-hex-digit key id derived from the key), so a server started with the wrong key says so
plainly rather than failing with a bare authentication error, and old keys can be kept
for reading during a key rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_ENV = "GATE_REVIEW_KEY"  # base64 (or hex) of 32 bytes
KEY_FILE_ENV = "GATE_REVIEW_KEY_FILE"  # path to a file holding the same
_MAGIC = b"EGS1"
_NONCE_LEN = 12
_KEY_ID_LEN = 4


class SealError(Exception):
    """A sealed blob could not be opened."""


class KeyMismatch(SealError):
    """The blob was sealed with a key this process does not hold."""


class KeyMissing(SealError):
    """No key configured, or the configured key is malformed."""


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(b"egate-review-key-id" + key).digest()[:_KEY_ID_LEN]


def new_key_text() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def parse_key(text: str) -> bytes:
    text = text.strip()
    raw: bytes | None = None
    if len(text) == 64:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = None
    if raw is None:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KeyMissing("review key is neither base64 nor hex") from exc
    if len(raw) != 32:
        raise KeyMissing(f"review key must be 32 bytes (AES-256), got {len(raw)}")
    return raw


class ImageSeal:
    """Seals with the first key; opens with any key it holds."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise KeyMissing("no review key")
        for k in keys:
            if len(k) != 32:
                raise KeyMissing("review keys must be 32 bytes")
        self._sealing = AESGCM(keys[0])
        self._sealing_id = key_id(keys[0])
        self._by_id: dict[bytes, AESGCM] = {key_id(k): AESGCM(k) for k in keys}

    @property
    def key_id_hex(self) -> str:
        return self._sealing_id.hex()

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> ImageSeal:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        if not lines:
            raise KeyMissing(f"key file {path} is empty")
        return cls([parse_key(ln) for ln in lines])

    @classmethod
    def from_environment(
        cls, key_file: str | None = None, environ: Mapping[str, str] | None = None
    ) -> ImageSeal:
        """An explicit key file wins, then GATE_REVIEW_KEY_FILE, then GATE_REVIEW_KEY."""
        env = os.environ if environ is None else environ
        path = key_file or env.get(KEY_FILE_ENV)
        if path:
            return cls.from_file(path)
        text = env.get(KEY_ENV)
        if text:
            return cls([parse_key(part) for part in text.split(",") if part.strip()])
        raise KeyMissing(
            f"no review key: pass --key-file, or set {KEY_FILE_ENV} or {KEY_ENV} "
            "(create one with `gate review keygen FILE`)"
        )

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_LEN)
        ct = self._sealing.encrypt(nonce, plaintext, context.encode())
        return _MAGIC + self._sealing_id + nonce + ct

    def open(self, blob: bytes, context: str) -> bytes:
        head = len(_MAGIC) + _KEY_ID_LEN + _NONCE_LEN
        if len(blob) < head + 16 or not blob.startswith(_MAGIC):
            raise SealError("not a sealed review blob")
        kid = blob[len(_MAGIC) : len(_MAGIC) + _KEY_ID_LEN]
        aead = self._by_id.get(kid)
        if aead is None:
            raise KeyMismatch(
                f"sealed with key {kid.hex()}, this process holds "
                f"{', '.join(k.hex() for k in self._by_id)}"
            )
        nonce = blob[len(_MAGIC) + _KEY_ID_LEN : head]
        try:
            return aead.decrypt(nonce, blob[head:], context.encode())
        except InvalidTag as exc:
            raise SealError(f"sealed blob for {context} is damaged or belongs elsewhere") from exc

    def seal_image(self, image: np.ndarray, context: str) -> bytes:
        """JPEG at high quality: an officer compares faces, a PNG of a 1080p frame would be
        ten times larger for no visible gain."""
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise ValueError("image could not be encoded")
        return self.seal(buf.tobytes(), context)


# --- the audit chain's key (HMAC-SHA256) ----------------------------------------------

AUDIT_KEY_ENV = "GATE_REVIEW_AUDIT_KEY"  # base64 (or hex) of 32 bytes
AUDIT_KEY_FILE_ENV = "GATE_REVIEW_AUDIT_KEY_FILE"
_AUDIT_DOMAIN = b"egate-audit-chain-v1\0"


class AuditKeyMissing(KeyMissing):
    """No audit key, or it is malformed: audit rows cannot be written or checked."""


class AuditKeyMismatch(KeyMissing):
    """The audit chain was written with a key this process does not hold."""


def audit_key_id(key: bytes) -> str:
    return hashlib.sha256(b"egate-audit-key-id" + key).digest()[:_KEY_ID_LEN].hex()


def default_audit_key_file(environ: Mapping[str, str] | None = None) -> Path:
    """``$GATE_REVIEW_AUDIT_KEY_FILE``, else ``/etc/egate/audit.key`` for root, else
    ``$XDG_CONFIG_HOME/egate/audit.key`` (``~/.config/egate/audit.key``): one place for
    every ``gate review`` command run by the same account, and never the store's folder."""
    env = os.environ if environ is None else environ
    if env.get(AUDIT_KEY_FILE_ENV):
        return Path(env[AUDIT_KEY_FILE_ENV])
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/etc/egate/audit.key")
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "egate" / "audit.key"


def create_key_file(path: str | os.PathLike[str]) -> bool:
    """Write a new random key to ``path`` (mode 0600, folder 0700 when created); returns
    False when the file already exists (it is never overwritten)."""
    p = Path(path)
    p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        out.write(new_key_text() + "\n")
        out.flush()
        os.fsync(out.fileno())
    return True


class AuditKey:
    """Keys the audit chain: each row's MAC covers the previous row's MAC. Like the image
    key it lives outside the store; a file may hold several keys, one per line: the first
    writes, all verify (rotation). Each row names the id of the key that wrote it."""

    def __init__(self, keys: Sequence[bytes], path: Path | None = None) -> None:
        if not keys:
            raise AuditKeyMissing("no audit key")
        for k in keys:
            if len(k) != 32:
                raise AuditKeyMissing("audit keys must be 32 bytes")
        self._writing = keys[0]
        self._by_id = {audit_key_id(k): k for k in keys}
        self.path = path

    @property
    def key_id(self) -> str:
        return audit_key_id(self._writing)

    def holds(self, key_id: str | None) -> bool:
        return key_id in self._by_id

    @property
    def key_ids(self) -> list[str]:
        return list(self._by_id)

    def mac(self, material: bytes) -> str:
        return hmac.new(self._writing, _AUDIT_DOMAIN + material, hashlib.sha256).hexdigest()

    def check(self, key_id: str, material: bytes, mac: str) -> bool:
        key = self._by_id.get(key_id)
        if key is None:
            return False
        good = hmac.new(key, _AUDIT_DOMAIN + material, hashlib.sha256).hexdigest()
        return hmac.compare_digest(good, mac)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> AuditKey:
        try:
            lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
        except FileNotFoundError as exc:
            raise AuditKeyMissing(f"audit key file {path} does not exist") from exc
        if not lines:
            raise AuditKeyMissing(f"audit key file {path} is empty")
        try:
            return cls([parse_key(ln) for ln in lines], Path(path))
        except AuditKeyMissing:
            raise
        except KeyMissing as exc:
            raise AuditKeyMissing(f"audit key file {path}: {exc}") from exc

    @classmethod
    def from_environment(
        cls, key_file: str | None = None, environ: Mapping[str, str] | None = None,
        create: bool = False,
    ) -> AuditKey:
        """An explicit file wins, then ``GATE_REVIEW_AUDIT_KEY`` (the key itself), then
        the default file (``default_audit_key_file``). With ``create`` a missing file is
        created (0600): commands that write audit rows do so, ``audit-verify`` never."""
        env = os.environ if environ is None else environ
        if not key_file and env.get(AUDIT_KEY_ENV) and not env.get(AUDIT_KEY_FILE_ENV):
            try:
                return cls([parse_key(p) for p in env[AUDIT_KEY_ENV].split(",") if p.strip()])
            except AuditKeyMissing:
                raise
            except KeyMissing as exc:
                raise AuditKeyMissing(f"{AUDIT_KEY_ENV}: {exc}") from exc
        path = Path(key_file) if key_file else default_audit_key_file(env)
        if create:
            create_key_file(path)
        return cls.from_file(path)
