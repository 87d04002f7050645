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
