"""The typed parameter set the code files are rendered from.

Code files (exim4.conf, dovecot.conf, the nftables table, SnappyMail's
application.ini) are programs in all but name: Exim runs Perl and ${run} from
its config, Dovecot starts any executable a service names, nft includes files.
So the panel never sends their text to the helper; it sends these few typed
values, and the helper renders the files itself with the same renderers the
panel uses. Where files live (ports, paths, users) is the helper's own Layout,
never the request's.

``CodeParams.from_json`` is the helper's parser: exact keys, exact types, and
every value through the same validators the renderers apply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from . import validate as v
from .snapshot import WEBMAIL_APPS, Snapshot, SnappyMail


@dataclass(frozen=True)
class CodeParams:
    hostname: str = "localhost.localdomain"
    internal_lookup: bool = True
    sieve_enabled: bool = False
    sieve_external: bool = False
    snappymail: SnappyMail = field(default_factory=SnappyMail)
    webmail: str = WEBMAIL_APPS[0]  # which webmail https://<host name>/webmail/ serves

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: object) -> "CodeParams":
        """Parse a request's "code" object; ValueError naming the field."""
        fields = _exact_keys(data, ("hostname", "internal_lookup", "sieve_enabled",
                                    "sieve_external", "snappymail", "webmail"), "code")
        sm = _exact_keys(fields["snappymail"], ("installed", "admin_login",
                                                "admin_password_hash", "admin_key"),
                         "code.snappymail")
        hostname = _string(fields["hostname"], "hostname")
        if v.hostname(hostname, "server host name") != hostname:
            # The panel sends it normalised; anything else (a stray blank or
            # newline, upper case) did not come from the panel's own form.
            raise ValueError("hostname is not a normalised host name")
        params = cls(
            hostname=hostname,
            internal_lookup=_bool(fields["internal_lookup"], "internal_lookup"),
            sieve_enabled=_bool(fields["sieve_enabled"], "sieve_enabled"),
            sieve_external=_bool(fields["sieve_external"], "sieve_external"),
            snappymail=SnappyMail(
                installed=_bool(sm["installed"], "snappymail.installed"),
                admin_login=_string(sm["admin_login"], "snappymail.admin_login"),
                admin_password_hash=_string(sm["admin_password_hash"],
                                            "snappymail.admin_password_hash"),
                admin_key=_string(sm["admin_key"], "snappymail.admin_key"),
            ),
            webmail=_string(fields["webmail"], "webmail"),
        )
        if params.webmail not in WEBMAIL_APPS:
            raise ValueError(f"webmail must be one of {', '.join(WEBMAIL_APPS)}")
        if params.snappymail.installed:
            v.snappymail_credentials(params.snappymail)
        return params


def code_params(snapshot: Snapshot) -> CodeParams:
    """What of the snapshot the code files depend on."""
    return CodeParams(
        hostname=snapshot.server.hostname,
        internal_lookup=snapshot.internal_lookup,
        sieve_enabled=snapshot.sieve_enabled,
        sieve_external=snapshot.sieve_external,
        snappymail=snapshot.snappymail,
        webmail=snapshot.webmail,
    )


def _exact_keys(data: object, keys: tuple[str, ...], what: str) -> dict:
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be an object")
    if set(data) != set(keys):
        missing = sorted(set(keys) - set(data))
        unknown = sorted(set(data) - set(keys))
        raise ValueError(f"{what}: missing {missing}, unknown {unknown}")
    return data


def _bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} must be true or false")
    return value


def _string(value: object, what: str) -> str:
    if not isinstance(value, str) or len(value) > 1024:
        raise ValueError(f"{what} must be a string")
    return value
