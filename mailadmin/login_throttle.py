"""django-axes configured for the panel: failures counted per (user name key,
client address), so an attacker elsewhere cannot lock the real admin out and
one address (a reverse proxy) cannot lock everyone out. Settings name these
functions; they read settings at call time so tests and operators can change
the limit and the cool-off."""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.core.exceptions import ValidationError
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import ngettext

from .usernames import MAX_LENGTH, username_key
from .validation import normalize_address


def failure_limit(request, credentials) -> int:
    return settings.MAILPANEL_LOGIN_ATTEMPTS


def cool_off(request) -> timedelta:
    return timedelta(minutes=settings.MAILPANEL_LOGIN_COOLOFF_MINUTES)


def throttle_username(request, credentials) -> str | None:
    if credentials:
        name = credentials.get("username")
    else:
        name = request.POST.get("username")
    if not name or len(name) > MAX_LENGTH:
        return None  # the login form refuses it before anything is counted
    key = username_key(name)
    if "@" in key:
        # A mailbox address (mailbox_session): münchen.example and
        # xn--mnchen-3ya.example are one mailbox, so one counter.
        try:
            key = normalize_address(key)
        except ValidationError:
            pass
    # Casefolding can triple the length; no account has a key this long anyway.
    return key[:MAX_LENGTH]


def lockout_response(request, original_response=None, credentials=None):
    minutes = settings.MAILPANEL_LOGIN_COOLOFF_MINUTES
    message = ngettext(
        "Too many failed logins. Wait %(minutes)d minute and try again.",
        "Too many failed logins. Wait %(minutes)d minutes and try again.",
        minutes,
    ) % {"minutes": minutes}
    next_url = request.POST.get("next") or request.GET.get("next") or ""
    if not url_has_allowed_host_and_scheme(
        next_url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        next_url = ""
    form = AuthenticationForm(request, initial={"username": request.POST.get("username", "")[:MAX_LENGTH]})
    context = {"form": form, "lockout": message, "next": next_url}
    return render(request, "registration/login.html", context, status=429)

