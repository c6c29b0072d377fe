"""A mailbox owner signed in to the panel: who they are, and nothing more.

A mailbox session is not a Django login. request.user stays anonymous, so
every panel view (behind LoginRequiredMiddleware) treats the person as a
stranger without a line of new code; only the views wrapped in
`mailbox_required` see the mailbox, and only that one. The session holds
the account's id and an HMAC of its stored password hash: a new password
(set by its owner, the customer or an admin), a deleted account, or a domain
that stops being served ends the session at its next request.

The password is checked against the stored {BLF-CRYPT} hash Dovecot checks
(passwords.check_password); failures count in django-axes under the address
like every login (login_throttle), also when the form is the self-service
page's "confirm with your password".
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, wraps

from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.signals import user_login_failed
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import ValidationError
from django.http import Http404
from django.middleware.csrf import rotate_token
from django.shortcuts import resolve_url
from django.utils.crypto import constant_time_compare, salted_hmac
from django_htmx.http import HttpResponseClientRedirect

from . import passwords
from .models import MailAccount
from .services.client_config import served_domains
from .validation import normalize_address

SESSION_KEY = "_mailbox_account"
HASH_KEY = "_mailbox_hash"
_SALT = "mailpanel.mailbox_session"


@dataclass(frozen=True)
class MailboxActor:
    """Who acts in self-service, for the services' audit and apply: the
    mailbox itself, never an admin (acts_as_admin is False), audited under
    its address; its apply jobs belong to no panel user."""

    address: str
    domain_name: str
    pk = None
    is_authenticated = True
    is_staff = False
    is_superuser = False

    @property
    def username(self) -> str:
        return self.address

    @property
    def own_domains(self) -> tuple[str, ...]:
        """The domains whose addresses this actor may read in a message."""
        return (self.domain_name,)


def actor_for(account: MailAccount) -> MailboxActor:
    return MailboxActor(f"{account.local_part}@{account.domain.name}", account.domain.name)


def served_accounts():
    return MailAccount.objects.filter(domain__in=served_domains()).select_related("domain")


def find_account(address: str) -> MailAccount | None:
    try:
        normalized = normalize_address(address)
    except ValidationError:
        return None
    local, _at, name = normalized.rpartition("@")
    return served_accounts().filter(local_part=local, domain__name=name).first()


@cache
def _dummy_hash() -> str:
    """Checked when there is no such mailbox, so an unknown address costs the
    same bcrypt work as a known one (no oracle of addresses by timing)."""
    return passwords.hash_password("no such mailbox")


def check_password(account: MailAccount | None, password: str) -> bool:
    if account is None:
        passwords.check_password(password, _dummy_hash())
        return False
    return passwords.check_password(password, account.password_hash)


# --- throttling: the same counter as the login form ----------------------------------


def _credentials(address: str) -> dict:
    return {"username": address}


def locked_out(request, address: str) -> bool:
    return AxesProxyHandler.is_locked(request, _credentials(address))


def count_failure(request, address: str) -> None:
    user_login_failed.send(sender=__name__, credentials=_credentials(address), request=request)


def forget_failures(request, address: str) -> None:
    AxesProxyHandler.get_implementation().reset_user_attempts(request, _credentials(address))


def confirm_password(request, account: MailAccount, password: str) -> bool | None:
    """The self-service page's "your current password": True, False (counted
    as a failed login), or None when the address is locked out."""
    address = f"{account.local_part}@{account.domain.name}"
    if locked_out(request, address):
        return None
    if check_password(account, password):
        return True
    count_failure(request, address)
    return False


# --- the session ------------------------------------------------------------------------


def _fingerprint(account: MailAccount) -> str:
    return salted_hmac(_SALT, account.password_hash, algorithm="sha256").hexdigest()


def log_in(request, account: MailAccount) -> None:
    """A fresh session for the mailbox alone: whatever this browser was
    signed in as before (a panel user, another mailbox) is gone."""
    request.session.flush()
    request.session[SESSION_KEY] = account.pk
    request.session[HASH_KEY] = _fingerprint(account)
    rotate_token(request)


def keep_after_password_change(request, account: MailAccount) -> None:
    """Like update_session_auth_hash: this session stays, the others end."""
    request.session.cycle_key()
    request.session[HASH_KEY] = _fingerprint(account)


def current_account(request) -> MailAccount | None:
    pk = request.session.get(SESSION_KEY)
    if pk is None:
        return None
    account = served_accounts().filter(pk=pk).first()
    if account is None or not constant_time_compare(request.session.get(HASH_KEY, ""), _fingerprint(account)):
        request.session.flush()
        return None
    return account


def log_out(request) -> None:
    request.session.flush()


def log_out_mailbox(request) -> None:
    """Before a panel user's login: the session carries one identity."""
    for key in (SESSION_KEY, HASH_KEY):
        request.session.pop(key, None)


def mailbox_required(view):
    """The view gets the signed-in mailbox as its second argument. A panel
    user gets 404 (these pages do not exist for them: redirecting a signed-in
    user to the login page would loop); anyone else goes to the login page."""

    @login_not_required
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        account = current_account(request)
        if account is None:
            if request.user.is_authenticated:
                raise Http404
            if request.htmx:  # the whole page goes to the login, not a section
                return HttpResponseClientRedirect(resolve_url(settings.LOGIN_URL))
            return redirect_to_login(request.get_full_path())
        return view(request, account, *args, **kwargs)

    return wrapper
