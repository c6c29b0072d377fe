"""Mail programs that set themselves up: Thunderbird's autoconfig and
Outlook's autodiscover (anonymous machine endpoints, routed by Host), and
the Apple .mobileconfig profile of one mailbox (for its domain's owner and
admins here; for the mailbox itself in views/mailbox.py).

Thunderbird asks https://autoconfig.<domain>/mail/config-v1.1.xml (then
https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml); Outlook POSTs
to https://<domain>/autodiscover/autodiscover.xml and then
https://autodiscover.<domain>/…. Those Host values are every hosted domain's,
which ALLOWED_HOSTS cannot list, so `AutoconfigMiddleware` (early in
MIDDLEWARE, before anything reads the Host through get_host()) answers these
three paths itself and nothing else:

- Host autoconfig.<d>, autodiscover.<d> or <d> where <d> is a served domain
  (services.client_config.hosted_domain): answered for <d>;
- Host one of ALLOWED_HOSTS (the panel's own name; where plain-HTTP
  autoconfig ends after nginx's redirect to https://<hostname>/…): answered
  for the domain of the address the client sent, if that domain is served;
- anything else: 404, the same for an unknown name as for a pending one.

No session, no cookies, no CSRF: nothing here acts for a person. Nothing from
the request is written into an answer but an autodiscover address that
normalize_address accepted and that lies in the served domain.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpResponse, HttpResponseNotFound
from django.http.request import split_domain_port, validate_host
from django.shortcuts import get_object_or_404
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST, require_safe

from .. import client_config as cc
from ..services import client_config as service
from . import mta_sts as mta_sts_view
from .common import get_domain_for_user

THUNDERBIRD_PATHS = ("/mail/config-v1.1.xml", "/.well-known/autoconfig/mail/config-v1.1.xml")
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"  # Outlook also spells it Autodiscover/Autodiscover.xml
HOST_PREFIXES = ("autoconfig.", "autodiscover.")
XML = "application/xml; charset=utf-8"


class PanelHost:
    """The Host was the panel's own name: the domain comes from the address."""


PANEL = PanelHost()


def requested_domain(request):
    """The served domain the Host names, PANEL, or None. Reads the raw Host
    header: request.get_host() would refuse every hosted domain."""
    host, _port = split_domain_port(request.META.get("HTTP_HOST", ""))
    if not host:
        return None
    for prefix in HOST_PREFIXES:
        if host.startswith(prefix):
            domain = service.hosted_domain(host[len(prefix) :])
            if domain is not None:
                return domain
    domain = service.hosted_domain(host)
    if domain is not None:
        return domain
    return PANEL if validate_host(host, settings.ALLOWED_HOSTS) else None


def _xml(content: bytes, status: int = 200) -> HttpResponse:
    response = HttpResponse(content, content_type=XML, status=status)
    response["Cache-Control"] = "no-store"
    return response


def _not_found() -> HttpResponse:
    return HttpResponseNotFound(b"Not found\n", content_type="text/plain")


@require_safe
def thunderbird(request, domain):
    if domain is PANEL:
        found = service.address_in(request.GET.get("emailaddress", ""))
        domain = found[1] if found else None
    if domain is None:
        return _not_found()
    return _xml(cc.thunderbird_config(service.client_settings(domain)))


@require_POST
def autodiscover(request, domain):
    if domain is None:
        return _not_found()
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = cc.MAX_REQUEST_BYTES + 1
    if length > cc.MAX_REQUEST_BYTES:
        return _xml(cc.autodiscover_error(cc.INVALID_REQUEST), status=413)
    try:
        asked = cc.parse_autodiscover_request(request.read(cc.MAX_REQUEST_BYTES + 1))
    except cc.AutodiscoverRequestError:
        return _xml(cc.autodiscover_error(cc.INVALID_REQUEST), status=400)
    if asked.schema != cc.OUTLOOK_SCHEMA:  # mobilesync (ActiveSync) is not offered
        return _xml(cc.autodiscover_error(cc.SCHEMA_NOT_AVAILABLE))
    found = service.address_in(asked.address, None if domain is PANEL else domain)
    if found is None:
        return _xml(cc.autodiscover_error(cc.ADDRESS_NOT_FOUND))
    address, served = found
    return _xml(cc.autodiscover_response(service.client_settings(served), address))


ROUTES = {path: thunderbird for path in THUNDERBIRD_PATHS} | {AUTODISCOVER_PATH: autodiscover}


class AutoconfigMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info == mta_sts_view.mta_sts.POLICY_PATH:  # by Host too (views/mta_sts.py)
            return mta_sts_view.policy(request)
        view = ROUTES.get(request.path_info.lower())
        if view is None:
            return self.get_response(request)
        return view(request, requested_domain(request))


# --- Apple profile -----------------------------------------------------------------------


def mobileconfig_response(account) -> HttpResponse:
    """The profile of one mailbox, without a password: the device asks."""
    address = f"{account.local_part}@{account.domain.name}"
    body = cc.mobileconfig(service.client_settings(account.domain), address)
    response = HttpResponse(body, content_type=cc.MOBILECONFIG_CONTENT_TYPE)
    response["Content-Disposition"] = content_disposition_header(True, f"{address}.mobileconfig")
    response["Cache-Control"] = "no-store"
    return response


@require_GET
def account_mobileconfig(request, domain_id, account_id):
    domain = get_domain_for_user(request, domain_id)
    return mobileconfig_response(get_object_or_404(domain.accounts.select_related("domain"), pk=account_id))
