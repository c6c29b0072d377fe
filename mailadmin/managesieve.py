"""The out-of-office script put in place over ManageSieve (RFC 5804), logged
in as the mailbox itself with the password its owner just typed. No ORM.

Why the owner's own login and not a privileged path: a Dovecot master user
would let the panel open every mailbox at any time, and a root helper
writing into mail homes would be root touching directories the mailbox's
own ManageSieve sessions fill. With the owner's password the panel can do
nothing the owner could not do from their mail program, and keeps nothing:
the password lives for one request.

Dovecot treats a connection from the same host as secured, so plain-text
SASL PLAIN is accepted on 127.0.0.1 even where it is refused from outside.
The client is sievelib's (maintained with Modoboa)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from sievelib import managesieve

from . import sieve_vacation


class SieveError(Exception):
    """ManageSieve could not be reached, refused the login or the script."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason  # "unreachable" | "login" | "refused"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


def _connect(endpoint: Endpoint, login: str, password: str) -> managesieve.Client:
    client = managesieve.Client(endpoint.host, endpoint.port)  # reads time out after 5 s
    try:
        with warnings.catch_warnings():
            # "credentials over an unencrypted connection": loopback, see above
            warnings.simplefilter("ignore")
            ok = client.connect(login, password, authmech="PLAIN")
    except (managesieve.Error, OSError):
        raise SieveError("unreachable") from None
    if not ok:
        raise SieveError("login")
    return client


def _close(client: managesieve.Client) -> None:
    try:
        client.logout()
    except (managesieve.Error, OSError):
        pass


def put_vacation(endpoint: Endpoint, login: str, password: str, script: str) -> None:
    """Upload the reply and make it run: alone when nothing else was active,
    else through the wrapper that includes the person's own active script."""
    client = _connect(endpoint, login, password)
    try:
        active, _scripts = client.listscripts() or (None, [])
        previous = _previous(client, active)
        if not client.putscript(sieve_vacation.VACATION_SCRIPT, script):
            raise SieveError("refused")
        if previous:
            if not client.putscript(sieve_vacation.WRAPPER_SCRIPT, sieve_vacation.wrapper_script(previous)):
                raise SieveError("refused")
            client.setactive(sieve_vacation.WRAPPER_SCRIPT)
        else:
            client.setactive(sieve_vacation.VACATION_SCRIPT)
    except (managesieve.Error, OSError):
        raise SieveError("unreachable") from None
    finally:
        _close(client)


def remove_vacation(endpoint: Endpoint, login: str, password: str) -> None:
    """Stop the reply; the person's own script is active again as before."""
    client = _connect(endpoint, login, password)
    try:
        active, scripts = client.listscripts() or (None, [])
        if active in (sieve_vacation.VACATION_SCRIPT, sieve_vacation.WRAPPER_SCRIPT):
            client.setactive(_previous(client, active) or "")
        for name in (sieve_vacation.WRAPPER_SCRIPT, sieve_vacation.VACATION_SCRIPT):
            if name in scripts or name == active:
                client.deletescript(name)
    except (managesieve.Error, OSError):
        raise SieveError("unreachable") from None
    finally:
        _close(client)


def _previous(client, active: str | None) -> str | None:
    """The person's own active script, also when our wrapper runs it now."""
    if active == sieve_vacation.WRAPPER_SCRIPT:
        return sieve_vacation.previous_of(client.getscript(active) or "")
    if active == sieve_vacation.VACATION_SCRIPT:
        return None
    return active
