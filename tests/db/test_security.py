"""Password hashing helpers."""

from __future__ import annotations

import pytest

from inspection.db.security import hash_password, needs_rehash, verify_password


def test_hash_and_verify() -> None:
    hashed = hash_password("correct horse")
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    assert verify_password(hashed, "correct horse")
    assert not verify_password(hashed, "wrong")
    assert not verify_password("not-a-hash", "correct horse")
    assert not needs_rehash(hashed)
    assert hash_password("correct horse") != hashed  # salted
    with pytest.raises(ValueError, match="empty"):
        hash_password("")
