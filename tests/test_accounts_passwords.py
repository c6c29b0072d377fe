"""Account passwords: stored as a hash the real Dovecot verifies; strength feedback."""

import shutil
import subprocess

import pytest

from mailadmin import passwords

needs_doveadm = pytest.mark.skipif(shutil.which("doveadm") is None, reason="doveadm not installed")


def doveadm_verifies(stored: str, password: str) -> bool:
    result = subprocess.run(
        ["doveadm", "pw", "-t", stored, "-p", password], capture_output=True, text=True, timeout=30
    )
    return result.returncode == 0 and "(verified)" in result.stdout


@needs_doveadm
@pytest.mark.parametrize(
    "password",
    ["Correct-Horse-9", "päss:wörd €uro", "with space and $dollar ^caret \\ \"quote'", "密码很长的一个密码9!"],
)
def test_hash_is_verified_by_real_doveadm_and_wrong_password_is_not(password):
    stored = passwords.hash_password(password)
    assert stored.startswith("{BLF-CRYPT}$2b$04$")
    assert ":" not in stored and " " not in stored  # a passwd-file field
    assert doveadm_verifies(stored, password)
    assert not doveadm_verifies(stored, password + "x")
    assert passwords.check_password(password, stored)
    assert not passwords.check_password(password.upper() + "!", stored)


@needs_doveadm
def test_default_cost_hash_is_verified_by_real_doveadm(settings):
    del settings.MAILPANEL_BCRYPT_ROUNDS  # the production cost
    stored = passwords.hash_password("Default-cost-pass-1")
    assert stored.startswith("{BLF-CRYPT}$2b$12$")
    assert doveadm_verifies(stored, "Default-cost-pass-1")


def test_hash_is_salted_never_reversible():
    a, b = passwords.hash_password("Same-Password-1"), passwords.hash_password("Same-Password-1")
    assert a != b
    assert "Same-Password-1" not in a


@pytest.mark.parametrize("bad", ["", "line\nbreak", "nul\x00byte", "x" * 73, "密" * 25])
def test_unstorable_passwords_are_refused_with_a_message(bad):
    with pytest.raises(passwords.ValidationError) as exc:
        passwords.hash_password(bad)
    assert exc.value.messages[0]


def test_strength_feedback_scores_and_hints():
    short = passwords.password_strength("ab1")
    assert short.score == 0 and not short.acceptable
    assert any("at least 8" in hint for hint in short.hints)
    common = passwords.password_strength("password123")
    assert common.score == 0 and "well-known" in common.hints[0]
    own_name = passwords.password_strength("alice-Example-2026", ("alice", "example", "example.org"))
    assert own_name.score <= 1 and not own_name.acceptable
    strong = passwords.password_strength("t7#Vq9!mZr2$kLp8")
    assert strong.score == 4 and strong.acceptable and strong.label == "strong"
    fair = passwords.password_strength("orange-tiger-lamp")
    assert fair.acceptable


def test_weak_password_is_refused_with_the_hints():
    with pytest.raises(passwords.ValidationError) as exc:
        passwords.validate_new_password("qwerty")
    assert "too weak" in exc.value.messages[0]
