"""NaCl secretbox (XSalsa20-Poly1305), the cipher of cosign's encrypted private-key files.

`cryptography` has Poly1305 but no (X)Salsa20, and a libsodium binding would be a new native
dependency for ~200 bytes of key material per use; so the keystream is computed here and the
authenticator comes from `cryptography` (constant-time tag check). Layout as in Go's
`x/crypto/nacl/secretbox`: output = 16-byte tag || ciphertext.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.poly1305 import Poly1305

KEY_SIZE = 32
NONCE_SIZE = 24
TAG_SIZE = 16
_MASK = 0xFFFFFFFF
_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
# Salsa20 quarter-rounds (a, b, c, d): a column round, then a row round.
_QUARTERS = ((0, 4, 8, 12), (5, 9, 13, 1), (10, 14, 2, 6), (15, 3, 7, 11), (0, 1, 2, 3), (5, 6, 7, 4), (10, 11, 8, 9), (15, 12, 13, 14))


class SecretboxError(ValueError):
    """The box was not sealed with this key (or was altered)."""


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) & _MASK) | (value >> (32 - shift))


def _rounds(state: list[int]) -> list[int]:
    x = list(state)
    for _ in range(10):
        for a, b, c, d in _QUARTERS:
            x[b] ^= _rotl((x[a] + x[d]) & _MASK, 7)
            x[c] ^= _rotl((x[b] + x[a]) & _MASK, 9)
            x[d] ^= _rotl((x[c] + x[b]) & _MASK, 13)
            x[a] ^= _rotl((x[d] + x[c]) & _MASK, 18)
    return x


def _state(key: bytes, middle: bytes) -> list[int]:
    k = struct.unpack("<8I", key)
    m = struct.unpack("<4I", middle)
    return [_SIGMA[0], *k[:4], _SIGMA[1], *m, _SIGMA[2], *k[4:], _SIGMA[3]]


def _hsalsa20(key: bytes, nonce16: bytes) -> bytes:
    x = _rounds(_state(key, nonce16))
    return struct.pack("<8I", *(x[i] for i in (0, 5, 10, 15, 6, 7, 8, 9)))


def _keystream(key: bytes, nonce: bytes, length: int) -> bytes:
    """XSalsa20: HSalsa20 derives a subkey from the first 16 nonce bytes, Salsa20 runs on the last 8."""
    subkey = _hsalsa20(key, nonce[:16])
    out = bytearray()
    for counter in range((length + 63) // 64):
        state = _state(subkey, nonce[16:] + struct.pack("<Q", counter))
        out += struct.pack("<16I", *((a + b) & _MASK for a, b in zip(_rounds(state), state, strict=False)))
    return bytes(out[:length])


def _xor(data: bytes, stream: bytes) -> bytes:
    return (int.from_bytes(data, "little") ^ int.from_bytes(stream, "little")).to_bytes(len(data), "little")


def _check(key: bytes, nonce: bytes) -> None:
    if len(key) != KEY_SIZE or len(nonce) != NONCE_SIZE:
        raise SecretboxError(f"secretbox needs a {KEY_SIZE}-byte key and a {NONCE_SIZE}-byte nonce")


def seal(key: bytes, nonce: bytes, plaintext: bytes) -> bytes:
    _check(key, nonce)
    stream = _keystream(key, nonce, 32 + len(plaintext))
    ciphertext = _xor(plaintext, stream[32:])
    return Poly1305.generate_tag(stream[:32], ciphertext) + ciphertext


def unseal(key: bytes, nonce: bytes, box: bytes) -> bytes:
    _check(key, nonce)
    if len(box) < TAG_SIZE:
        raise SecretboxError("secretbox is shorter than its tag")
    tag, ciphertext = box[:TAG_SIZE], box[TAG_SIZE:]
    stream = _keystream(key, nonce, 32 + len(ciphertext))
    try:
        Poly1305.verify_tag(stream[:32], ciphertext, tag)
    except InvalidSignature:
        raise SecretboxError("secretbox authentication failed") from None
    return _xor(ciphertext, stream[32:])
