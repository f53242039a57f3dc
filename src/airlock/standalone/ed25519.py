"""Ed25519 signature verification (RFC 8032, section 5.1.7), standard library only.

The generated bootstrap script embeds this module: it must check airlock.json's signature on a
node that has nothing but python3 (no `cryptography`, and no `openssl` with `-rawin` on
OpenSSL 1.1.1). Verification only; airlock signs with `cryptography`. Public keys are the PEM
SubjectPublicKeyInfo files `airlock keys generate` writes.

The check is the one OpenSSL and `cryptography` make (cofactorless): decode A (RFC 8032
5.1.3, non-canonical encodings refused), refuse S >= L, then encode [S]B - [k]A and compare
it byte for byte with R, where k = SHA-512(R || A || M) mod L. Not constant time: it handles
public data only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

__all__ = ["BadPublicKey", "key_id", "public_key_from_pem", "verify"]

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
# DER of SubjectPublicKeyInfo { algorithm id-Ed25519 (OID 1 3 101 112, RFC 8410) } before the 32 key bytes.
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")

_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z


class BadPublicKey(ValueError):
    """A public key that is not an Ed25519 key in the expected form."""


def _add(p: _Point, q: _Point) -> _Point:
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = 2 * t1 * t2 * _D % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _double(p: _Point) -> _Point:
    x1, y1, z1, _ = p
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1)
    g = a - b
    f = c + g
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


_IDENTITY: _Point = (0, 1, 1, 0)


def _multiply(k: int, p: _Point) -> _Point:
    out = _IDENTITY
    for bit in bin(k)[2:]:
        out = _double(out)
        if bit == "1":
            out = _add(out, p)
    return out


def _negate(p: _Point) -> _Point:
    x, y, z, t = p
    return (-x % _P, y, z, -t % _P)


def _recover_x(y: int, sign: int) -> int | None:
    if y >= _P:
        return None
    x2 = (y * y - 1) * pow(_D * y * y + 1, _P - 2, _P) % _P
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if x & 1 != sign:
        x = _P - x
    return x


def _decode(s: bytes) -> _Point | None:
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _recover_x(y, sign)
    if x is None:
        return None
    return (x, y, 1, x * y % _P)


def _encode(p: _Point) -> bytes:
    x, y, z, _ = p
    zinv = pow(z, _P - 2, _P)
    x, y = x * zinv % _P, y * zinv % _P
    return int.to_bytes(y | ((x & 1) << 255), 32, "little")


_G_Y = 4 * pow(5, _P - 2, _P) % _P
_G_X = _recover_x(_G_Y, 0)
assert _G_X is not None
_BASE: _Point = (_G_X, _G_Y, 1, _G_X * _G_Y % _P)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message` by `public_key` (32
    raw bytes); False for any bad signature, key or length."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = _decode(public_key)
    if a is None:
        return False
    r_bytes = signature[:32]
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    h = hashlib.sha512(r_bytes + public_key + message).digest()
    k = int.from_bytes(h, "little") % _L
    r_check = _add(_multiply(s, _BASE), _negate(_multiply(k, a)))
    return _encode(r_check) == r_bytes


def public_key_from_pem(pem: bytes) -> bytes:
    """The 32 raw key bytes of a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) holding an Ed25519 key."""
    try:
        text = pem.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BadPublicKey("not a PEM file (not ASCII)") from exc
    begin, end = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"
    if begin not in text or end not in text:
        raise BadPublicKey("not a PEM public key (no BEGIN PUBLIC KEY block)")
    body = text.split(begin, 1)[1].split(end, 1)[0]
    try:
        der = base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadPublicKey("the PEM block is not valid base64") from exc
    if len(der) != len(_SPKI_PREFIX) + 32 or not der.startswith(_SPKI_PREFIX):
        raise BadPublicKey("not an Ed25519 public key (airlock keys are Ed25519)")
    return der[len(_SPKI_PREFIX) :]


def key_id(public_key: bytes) -> str:
    """`sha256:<hex>` of the key's DER SubjectPublicKeyInfo (`airlock keys fingerprint`)."""
    return "sha256:" + hashlib.sha256(_SPKI_PREFIX + public_key).hexdigest()
