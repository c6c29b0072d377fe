"""One ACME order, with certbot's own protocol library (`acme` on PyPI): the
account, the order, HTTP-01 through the web server's webroot, the
certificate chain. No ORM, no Django settings: services.certificates passes
everything in and stores what comes back.

Why the library and not Debian's certbot: certbot keeps private keys in its
own tree (/etc/letsencrypt, root) and runs hooks as root; here the private
keys never leave the helper (it makes the key and answers a CSR), and the
unprivileged worker runs the protocol. No home-made ACME: every message,
signature, nonce and poll is the library's.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import josepy as jose
import requests
from acme import challenges, client, errors, messages
from cryptography.hazmat.primitives.asymmetric import rsa

CHALLENGE_DIR = ".well-known/acme-challenge"
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{16,256}")  # RFC 8555 §8.3: base64url, no padding
MAX_ERROR_CHARS = 1000


class AcmeFailure(Exception):
    """The order did not give a certificate; `message` is the CA's own words
    where it said something (its problem document), else what went wrong."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message[:MAX_ERROR_CHARS]


@dataclass
class Issued:
    fullchain_pem: str
    account_uri: str  # the account's URL at the CA, to reuse next time


def new_account_key() -> str:
    """A fresh account key as a JWK (JSON): a secret, stored encrypted."""
    return jose.JWKRSA(key=rsa.generate_private_key(public_exponent=65537, key_size=2048)).json_dumps()


def _problem(error: object) -> str:
    """A problem document as the CA wrote it: its detail (and type)."""
    if isinstance(error, messages.Error):
        detail = error.detail or error.description or ""
        kind = (error.typ or "").rsplit(":", 1)[-1]
        return f"{detail} ({kind})" if kind else detail
    return str(error)


def _validation_message(exc: errors.ValidationError) -> str:
    parts = []
    for authzr in exc.failed_authzrs:
        name = authzr.body.identifier.value
        for challenge in authzr.body.challenges:
            if challenge.error is not None:
                parts.append(f"{name}: {_problem(challenge.error)}")
        if not any(c.error is not None for c in authzr.body.challenges):
            parts.append(f"{name}: authorization {authzr.body.status}")
    return "; ".join(parts) or str(exc)


def order(
    *,
    directory: str,
    ca_bundle: str,
    account_key: str,
    account_uri: str,
    email: str,
    csr_pem: str,
    webroot: str,
    timeout: float,
) -> Issued:
    """Run one order for the CSR's names; raise AcmeFailure with the CA's
    message when it fails. The challenge files are removed again either way."""
    key = jose.JWK.json_loads(account_key)
    network = client.ClientNetwork(
        key, verify_ssl=ca_bundle or True, user_agent="mailpanel (acme-python)", timeout=min(int(timeout), 45)
    )
    written: list[Path] = []
    try:
        acme = client.ClientV2(client.ClientV2.get_directory(directory, network), network)
        account_uri = _account(acme, network, account_uri, email)
        orderr = acme.new_order(csr_pem.encode("ascii"))
        folder = Path(webroot) / CHALLENGE_DIR
        for authzr in orderr.authorizations:
            if authzr.body.status == messages.STATUS_VALID:
                continue  # the CA still trusts an earlier validation of this name
            challenge = next(
                (c for c in authzr.body.challenges if isinstance(c.chall, challenges.HTTP01)), None
            )
            if challenge is None:
                raise AcmeFailure(f"{authzr.body.identifier.value}: the CA offers no HTTP-01 challenge")
            response, validation = challenge.response_and_validation(key)
            token = challenge.chall.encode("token")
            if not TOKEN_RE.fullmatch(token):
                raise AcmeFailure("the CA sent a challenge token that is not base64url")
            written.append(_write_token(folder, token, validation))
            acme.answer_challenge(challenge, response)
        deadline = datetime.now() + timedelta(seconds=timeout)
        finished = acme.poll_and_finalize(orderr, deadline=deadline)
        return Issued(finished.fullchain_pem, account_uri)
    except errors.ValidationError as exc:
        raise AcmeFailure(_validation_message(exc)) from exc
    except messages.Error as exc:
        raise AcmeFailure(_problem(exc)) from exc
    except errors.TimeoutError as exc:
        raise AcmeFailure(f"the CA did not finish the order within {int(timeout)} s") from exc
    except errors.Error as exc:
        raise AcmeFailure(str(exc) or type(exc).__name__) from exc
    except requests.RequestException as exc:
        raise AcmeFailure(f"cannot reach the ACME CA at {directory}: {type(exc).__name__}") from exc
    except OSError as exc:
        raise AcmeFailure(f"cannot write the challenge into {webroot}: {exc.strerror or exc}") from exc
    finally:
        for path in written:
            path.unlink(missing_ok=True)


def _account(acme: client.ClientV2, network: client.ClientNetwork, uri: str, email: str) -> str:
    """The stored account, or a new one (an existing one for this key is
    found again through the CA's 409 answer)."""
    if uri:
        network.account = messages.RegistrationResource(uri=uri, body=messages.Registration())
        return uri
    registration = messages.NewRegistration.from_data(email=email or None, terms_of_service_agreed=True)
    try:
        return acme.new_account(registration).uri
    except errors.ConflictError as exc:
        network.account = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
        return exc.location


def _write_token(folder: Path, token: str, validation: str) -> Path:
    """The key authorization at <webroot>/.well-known/acme-challenge/<token>,
    readable by the web server, written by name only inside that folder."""
    # The panel's units run with UMask=0027: the web server (another user)
    # must still read the folder and the token, so the modes are set outright.
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
    path = folder / token
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        os.fchmod(f.fileno(), 0o644)
        f.write(validation)
    return path
