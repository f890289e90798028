"""crypto.py: sealing with associated data, key wrapping, key files, password hashes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from randomizer import crypto
from randomizer.crypto import IntegrityFailure, KeyFileError, KeyRing

KEY = bytes(range(32))
AAD = crypto.associated_data("TST", "slot", 7, "k1")


def test_a_sealed_value_opens_with_its_key_and_associated_data():
    sealed = crypto.seal(KEY, b"ACTIVEX", AAD)
    assert crypto.unseal(KEY, sealed, AAD) == b"ACTIVEX"
    assert b"ACTIVEX" not in sealed


def test_every_seal_uses_a_fresh_nonce():
    sealed = {crypto.seal(KEY, b"PLACEBOX", AAD) for _ in range(200)}
    assert len(sealed) == 200
    assert len({s[: crypto.NONCE_BYTES] for s in sealed}) == 200


def test_the_sealed_length_is_the_plaintext_length_plus_nonce_and_tag():
    # Lengths follow the plaintext: callers that must not leak an arm by size pad first.
    for size in (0, 7, 8, 100):
        assert len(crypto.seal(KEY, b"A" * size, AAD)) == crypto.NONCE_BYTES + size + 16


@pytest.mark.parametrize(
    "other",
    [
        crypto.associated_data("TST", "slot", 8, "k1"),  # another row
        crypto.associated_data("TST", "kit", 7, "k1"),  # another kind of object
        crypto.associated_data("OTHER", "slot", 7, "k1"),  # another study
        crypto.associated_data("TST", "slot", 7, "k2"),  # another key id
    ],
    ids=["row", "kind", "study", "key-id"],
)
def test_a_sealed_value_moved_to_another_row_does_not_open(other: bytes):
    sealed = crypto.seal(KEY, b"ACTIVEX", AAD)
    with pytest.raises(IntegrityFailure):
        crypto.unseal(KEY, sealed, other)


def test_associated_data_fields_cannot_run_into_each_other():
    assert crypto.associated_data("a", "b,c", 1, "k") != crypto.associated_data("a,b", "c", 1, "k")


@pytest.mark.parametrize("position", [0, crypto.NONCE_BYTES, -1])
def test_a_flipped_bit_anywhere_is_detected(position: int):
    sealed = bytearray(crypto.seal(KEY, b"ACTIVEX", AAD))
    sealed[position] ^= 1
    with pytest.raises(IntegrityFailure):
        crypto.unseal(KEY, bytes(sealed), AAD)


@pytest.mark.parametrize("length", [0, 5, crypto.NONCE_BYTES + 15])
def test_a_truncated_value_is_refused(length: int):
    with pytest.raises(IntegrityFailure, match="truncated"):
        crypto.unseal(KEY, crypto.seal(KEY, b"x", AAD)[:length], AAD)


def test_the_wrong_key_does_not_open():
    with pytest.raises(IntegrityFailure):
        crypto.unseal(bytes(32), crypto.seal(KEY, b"x", AAD), AAD)


def test_the_reusable_sealer_matches_seal_and_unseal():
    sealer = crypto.Sealer(KEY)
    assert crypto.unseal(KEY, sealer.seal(b"x", AAD), AAD) == b"x"
    assert sealer.unseal(crypto.seal(KEY, b"y", AAD), AAD) == b"y"
    with pytest.raises(IntegrityFailure):
        sealer.unseal(sealer.seal(b"x", AAD), b"other")


def test_a_data_key_is_wrapped_and_unwrapped_by_the_master_key():
    data_key = crypto.new_key()
    wrapped = crypto.wrap_key(KEY, data_key)
    assert data_key not in wrapped
    assert crypto.unwrap_key(KEY, wrapped) == data_key
    with pytest.raises(IntegrityFailure):
        crypto.unwrap_key(bytes(32), wrapped)


def test_new_keys_and_ids_are_random():
    assert len({crypto.new_key() for _ in range(50)}) == 50
    assert len(crypto.new_key()) == 32
    assert len({crypto.new_key_id() for _ in range(50)}) == 50


# --- the key ring and key files --------------------------------------------------------


def test_a_key_ring_survives_its_text_form():
    ring = KeyRing(()).with_new_current().with_new_current()
    again = KeyRing.from_text(ring.to_text(), "test")
    assert again == ring
    assert again.current == ring.keys[0]
    assert again.get(ring.keys[1].key_id) == ring.keys[1]


def test_an_unknown_key_id_is_an_error_naming_it():
    ring = KeyRing(()).with_new_current()
    with pytest.raises(KeyFileError, match="master key nope is not in the key ring"):
        ring.get("nope")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no key"),
        ("# only a comment\n", "holds no key"),
        ("no-separator\n", "line 1 is not"),
        ("k1:" + "A" * 10 + "\n", "line 1 is not"),
        ("k1:not base64!\n", "line 1 is not"),
        (":" + "A" * 43 + "=\n", "line 1 is not"),
    ],
)
def test_a_malformed_key_ring_is_refused_naming_the_line(text: str, message: str):
    with pytest.raises(KeyFileError, match=message):
        KeyRing.from_text(text, "master.key")


def test_secret_files_are_written_with_mode_0600(tmp_path: Path):
    target = tmp_path / "master.key"
    old = os.umask(0)
    try:
        crypto.write_secret_file(target, "secret\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert crypto.read_secret_file(target) == "secret\n"
    assert not (tmp_path / "master.key.tmp").exists()


def test_a_secret_file_readable_by_others_is_refused(tmp_path: Path):
    target = tmp_path / "master.key"
    crypto.write_secret_file(target, "secret\n")
    target.chmod(0o644)
    with pytest.raises(KeyFileError, match=r"must not be readable by others \(chmod 600\)"):
        crypto.read_secret_file(target)


def test_a_missing_secret_file_is_named(tmp_path: Path):
    with pytest.raises(KeyFileError, match=f"key file {tmp_path / 'audit.key'} is missing"):
        crypto.read_secret_file(tmp_path / "audit.key")


# --- passwords and tokens --------------------------------------------------------------


def test_a_password_hash_is_argon2id_salted_and_verifies():
    first, second = crypto.hash_password("pässword-long"), crypto.hash_password("pässword-long")
    assert first.startswith("argon2id$v=19$m=19456,t=2,p=1$")
    assert first != second, "no salt"
    assert crypto.verify_password(first, "pässword-long")
    assert not crypto.verify_password(first, "pässword-lonG")
    assert not crypto.verify_password(first, "")


@pytest.mark.parametrize(
    "stored", ["", "plain", "argon2id$v=19$m=1$x$y", "argon2id$v=19$t=2$%%%$###", "a$b$c$d$e$f"]
)
def test_a_damaged_hash_never_verifies(stored: str):
    assert not crypto.verify_password(stored, "anything")


def test_a_hash_of_another_algorithm_never_verifies():
    stored = crypto.hash_password("pässword-long").replace("argon2id", "argon2i", 1)
    assert not crypto.verify_password(stored, "pässword-long")


def test_the_token_digest_is_sha256_hex():
    assert crypto.token_digest("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_hmac_over_parts_equals_hmac_over_their_concatenation():
    assert crypto.hmac_sha256(KEY, [b"ab", b"c"]) == crypto.hmac_sha256(KEY, [b"abc"])


def test_the_bench_password_profile_is_refused_outside_tests_and_benchmarks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from randomizer import create_app
    from randomizer.crypto import PASSWORD_PROFILES, hash_password, use_password_profile
    from randomizer.errors import ConfigurationError
    from randomizer.instance import ensure_instance_files

    ensure_instance_files(tmp_path)
    monkeypatch.setenv("RANDOMIZER_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("RANDOMIZER_PASSWORD_PROFILE", "bench")
    try:
        with pytest.raises(ConfigurationError, match="tests and benchmarks only"):
            create_app()
        (tmp_path / "benchmark-instance").write_text("made by bench/randomize_load.py\n")
        create_app()
        assert "m=8,t=1" in hash_password("x" * 12)
    finally:
        use_password_profile("production")
    assert f"m={PASSWORD_PROFILES['production']['memory_cost']}," in hash_password("x" * 12)
