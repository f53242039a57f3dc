"""The bootstrap's pure-Python Ed25519 check: RFC 8032's vectors, and the same verdicts as
`cryptography` (OpenSSL) on random keys, messages and tampering."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from hypothesis import given
from hypothesis import strategies as st

from airlock.standalone import ed25519

# RFC 8032, section 7.1: TEST 1, 2, 3 and TEST SHA(abc) (secret key, public key, message, sig)
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
]
L = 2**252 + 27742317777372353535851937790883648493


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    pub, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    assert ed25519.verify(pub, msg, sig)
    # the vectors are what cryptography computes too (the table above is not mistyped)
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(secret))
    assert key.public_key().public_bytes_raw() == pub
    assert key.sign(msg) == sig
    for i in (0, 31, 32, 63):
        bad = bytearray(sig)
        bad[i] ^= 0x01
        assert not ed25519.verify(pub, msg, bytes(bad))
    assert not ed25519.verify(pub, msg + b"x", sig)


def test_malleable_and_malformed_signatures_fail() -> None:
    _, public, message, signature = RFC8032[1]
    pub, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    s = int.from_bytes(sig[32:], "little")
    malleated = sig[:32] + (s + L).to_bytes(32, "little")  # same point, S not reduced
    assert not ed25519.verify(pub, msg, malleated)
    with pytest.raises(Exception):  # noqa: B017 (OpenSSL refuses it too)
        Ed25519PublicKey.from_public_bytes(pub).verify(malleated, msg)
    assert not ed25519.verify(pub, msg, sig[:63])
    assert not ed25519.verify(pub[:31], msg, sig)
    assert not ed25519.verify(b"\xff" * 32, msg, sig)  # y >= p: not a point encoding


def _cryptography_verdict(pub: bytes, msg: bytes, sig: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, msg)
    except Exception:
        return False
    return True


@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=300))
def test_agrees_with_cryptography_on_valid_signatures(seed: bytes, message: bytes) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    pub = key.public_key().public_bytes_raw()
    assert ed25519.verify(pub, message, key.sign(message))


@given(
    seed=st.binary(min_size=32, max_size=32),
    message=st.binary(max_size=100),
    where=st.sampled_from(["message", "signature", "key"]),
    index=st.integers(min_value=0, max_value=63),
    flip=st.integers(min_value=1, max_value=255),
)
def test_agrees_with_cryptography_on_tampering(
    seed: bytes, message: bytes, where: str, index: int, flip: int
) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed)
    pub, sig = key.public_key().public_bytes_raw(), key.sign(message)
    if where == "message":
        message = message + bytes([flip]) if not message else _flip(message, index, flip)
    elif where == "signature":
        sig = _flip(sig, index, flip)
    else:
        pub = _flip(pub, index % 32, flip)
    assert ed25519.verify(pub, message, sig) == _cryptography_verdict(pub, message, sig)
    assert not ed25519.verify(pub, message, sig)


@given(pub=st.binary(min_size=32, max_size=32), sig=st.binary(min_size=64, max_size=64))
def test_agrees_with_cryptography_on_random_bytes(pub: bytes, sig: bytes) -> None:
    assert ed25519.verify(pub, b"airlock.json", sig) == _cryptography_verdict(
        pub, b"airlock.json", sig
    )


def _flip(data: bytes, index: int, flip: int) -> bytes:
    out = bytearray(data)
    out[index % len(out)] ^= flip
    return bytes(out)


def test_reads_the_pem_keys_airlock_writes() -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert ed25519.public_key_from_pem(pem) == key.public_key().public_bytes_raw()
    rsa = generate_private_key(65537, 2048).public_key()
    rsa_pem = rsa.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ed25519.BadPublicKey, match="not an Ed25519"):
        ed25519.public_key_from_pem(rsa_pem)
    with pytest.raises(ed25519.BadPublicKey, match="no BEGIN PUBLIC KEY"):
        ed25519.public_key_from_pem(b"ssh-ed25519 AAAA")
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ed25519.BadPublicKey):
        ed25519.public_key_from_pem(private_pem)
