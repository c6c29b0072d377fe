"""A pending domain's "Verify" button on the Overview tab: looks the ownership
TXT record up now (htmx swaps the section; without JavaScript a POST and a
redirect). Admins can also approve a domain without the record."""

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from ..services import ownership
from .common import get_domain_for_user
from .domain_page import OWNERSHIP
from .shell import done


@require_POST
def domain_verify(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    try:
        outcome = ownership.verify_domain(
            request.user, domain, skip_dns=request.POST.get("action") == "approve"
        )
    except ValidationError as exc:
        outcome = ownership.VerifyOutcome(domain, False, problem=" ".join(exc.messages))
    if outcome.verified:
        # The whole page changes (badges, records, the apply job): load it again.
        messages.success(
            request, _("%(name)s is verified. The mail server is being updated.") % {"name": domain.unicode_name}
        )
        if request.htmx:
            return HttpResponseClientRedirect(domain.get_absolute_url())
        return redirect(domain)
    problem = _("%(name)s is not verified yet.") % {"name": domain.unicode_name}
    if outcome.problem:
        problem += " " + outcome.problem
    return done(request, OWNERSHIP, domain, error=problem, verdict=outcome.verdict)
