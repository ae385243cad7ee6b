"""Fernet encryption for session values and metadata: the first key encrypts, every key decrypts."""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from core.errors import Unavailable


class Cipher:
    """MultiFernet over the configured keys (SESSION_ENCRYPTION_KEY, comma list, newest first)."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one Fernet key is needed")
        self._fernets = [Fernet(key.encode() if isinstance(key, str) else key) for key in keys]
        self._primary = self._fernets[0]
        self._multi = MultiFernet(self._fernets)

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._primary.encrypt(plaintext)

    def decrypt(self, token: bytes | str) -> bytes:
        try:
            return self._multi.decrypt(token)
        except InvalidToken:
            raise Unavailable(
                "a session value cannot be decrypted with the configured keys; keep every old key in "
                "SESSION_ENCRYPTION_KEY (comma list, newest first) until rotation has run"
            ) from None

    def encrypt_json(self, value: Any, compress: bool = False) -> bytes:
        raw = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        return self.encrypt(b"z" + zlib.compress(raw, 3) if compress else b"j" + raw)

    def decrypt_json(self, token: bytes | str) -> Any:
        raw = self.decrypt(token)
        body = zlib.decompress(raw[1:]) if raw[:1] == b"z" else raw[1:]
        return json.loads(body)

    def is_current(self, token: bytes | str) -> bool:
        """True when `token` is already encrypted under the first (encrypting) key."""
        try:
            self._primary.decrypt(token)
        except InvalidToken:
            return False
        return True

    def rotate(self, token: bytes | str) -> bytes:
        """The same plaintext re-encrypted under the first key (MultiFernet keeps the timestamp)."""
        try:
            return self._multi.rotate(token)
        except InvalidToken:
            raise Unavailable(
                "a session value cannot be decrypted with the configured keys; rotation needs the old key "
                "in SESSION_ENCRYPTION_KEY too"
            ) from None
