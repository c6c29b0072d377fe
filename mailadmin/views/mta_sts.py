"""The MTA-STS policy (RFC 8461) at https://mta-sts.<domain>/.well-known/mta-sts.txt.

An anonymous machine endpoint routed by the raw Host, like autoconfig
(views/autoconfig.py: its middleware hands this path here before anything
reads the Host through get_host(), which would refuse every hosted domain).
Only a served domain gets a policy (services.client_config.hosted_domain:
verified, not suspended, its mail here); an unknown, pending or suspended
name gets the same 404. The text is dnsrecords.mta_sts_policy's, the one
whose hash is the id in the _mta-sts record.
"""

from __future__ import annotations

from django.http import HttpResponse, HttpResponseNotFound
from django.http.request import split_domain_port
from django.views.decorators.http import require_safe

from .. import mta_sts
from ..dnsrecords import mta_sts_policy
from ..services import client_config as service

HOST_PREFIX = mta_sts.MTA_STS_LABEL + "."


@require_safe
def policy(request):
    host, _port = split_domain_port(request.META.get("HTTP_HOST", ""))
    domain = service.hosted_domain(host[len(HOST_PREFIX):]) if host.startswith(HOST_PREFIX) else None
    if domain is None:
        return HttpResponseNotFound(b"Not found\n", content_type="text/plain")
    text = mta_sts_policy(domain.name, mta_sts.mode_of(domain.mta_sts_enforce))
    response = HttpResponse(text.encode("ascii"), content_type=mta_sts.CONTENT_TYPE)
    # Senders cache by max_age and the record's id; a short HTTP cache is enough.
    response["Cache-Control"] = "max-age=300"
    return response
