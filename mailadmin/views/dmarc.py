"""The domain page's DMARC reports tab: where aggregate reports go and what
they said, per source IP and day (services.dmarc_reports). Every URL takes
the domain through get_domain_for_user (404 for outsiders)."""

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from ..forms_dmarc import DmarcMailboxForm
from ..models import DmarcMailbox
from ..services import dmarc_reports
from .common import get_domain_for_user
from .pages import DOMAIN_PAGE
from .shell import done, respond


def dmarc_section(request, domain, form=None) -> dict:
    mailbox = DmarcMailbox.objects.filter(domain=domain).select_related("account").first()
    return {
        "domain": domain,
        "dmarc_mailbox": mailbox,
        "dmarc_address": f"{mailbox.account.local_part}@{domain.name}" if mailbox else "",
        "dmarc_form": form or DmarcMailboxForm(),
        "dmarc_rows": dmarc_reports.source_rows(domain),
    }


DMARC_TAB = DOMAIN_PAGE.tab("dmarc", "mailadmin/domain/dmarc.html", dmarc_section)
DMARC = DOMAIN_PAGE.section("dmarc", "dmarc", "mailadmin/dmarc/section.html#dmarc", dmarc_section)


@require_http_methods(["GET", "POST"])
def domain_dmarc(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    if request.method == "GET":
        return respond(request, DMARC_TAB, domain)
    form = DmarcMailboxForm(request.POST)
    try:
        if request.POST.get("action") == "clear":
            change = dmarc_reports.clear_mailbox(request.user, domain)
            notice = _("Reports are no longer collected; remove rua= from the DMARC record.")
            return done(request, DMARC, domain, notice=notice, job=change.job)
        if form.is_valid():
            change = dmarc_reports.set_mailbox(request.user, domain, form.cleaned_data["local_part"])
            notice = _("Reports go to %(address)s: publish the DMARC record with its rua= as shown in the records.") % {
                "address": f"{change.object.account.local_part}@{domain.unicode_name}"
            }
            return done(request, DMARC, domain, notice=notice, job=change.job)
    except ValidationError as exc:
        form.add_error(None, ValidationError(exc.messages))
    problems = " ".join(e for errors in form.errors.values() for e in errors)
    return respond(request, DMARC, domain, status=400, error=problems, form=form)
