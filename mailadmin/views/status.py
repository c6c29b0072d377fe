"""The admin's status page: the whole server at one glance, each line with
its state, the age of what it says and a link to where it is fixed.
Mail-in-a-Box's status page is the anchor; unlike it, nothing here runs a
network check while the page loads: the lines read the last stored results
(the server diagnostics job, each domain's last DNS check, the job log),
and the queue, which costs a helper call, loads after the page."""

from datetime import timedelta

from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views.decorators.http import require_GET

from ..checks import certificate
from ..helper_client import HelperError
from ..models import Job, JobKind, JobState, MailDomain, SendHold
from ..services import certificates as acme_certificates
from ..services import jobs, mail_queue, nodes
from ..services.apply import layout_from_settings
from .common import require_admin, server_of
from .shell import Section, respond

PAGE = "mailadmin/status.html"
OK, WARN, BAD, UNKNOWN = "ok", "warn", "bad", "unknown"
FAILED_JOBS_DAYS = 7


def line(key, label, state, summary, *, fix_url="", fix_label="", checked_at=None, details=()):
    """One line of the page; each detail is a text or (text, link)."""
    return {
        "key": key, "label": label, "state": state, "summary": summary, "fix_url": fix_url,
        "fix_label": fix_label, "checked_at": checked_at,
        "details": [d if isinstance(d, tuple) else (d, "") for d in details],
    }


def identity_line(server) -> dict:
    url = reverse("mailadmin:server_settings") + "#server-identity"
    addresses = ", ".join(ip for ip in (server.ipv4, server.ipv6) if ip)
    if not addresses or server.hostname in ("", "localhost.localdomain"):
        return line("identity", _("Server identity"), BAD,
                    _("The host name or the public IP address is not set: DNS records and checks cannot be right."),
                    fix_url=url, fix_label=_("Set them"))
    return line("identity", _("Server identity"), OK, f"{server.hostname} ({addresses})", fix_url=url,
                fix_label=_("Change"))


def diagnostics_lines(server) -> list[dict]:
    """Port 25, blacklists and reverse DNS from the last server diagnostics."""
    job = (
        Job.objects.filter(kind=JobKind.DIAGNOSE, domain__isnull=True, state=JobState.DONE, result__what="server")
        .only("finished_at", "result")
        .order_by("-id")
        .first()
    )
    run = reverse("mailadmin:diagnostics")
    if job is None:
        return [line(key, label, UNKNOWN, _("Never checked."), fix_url=run, fix_label=_("Run the server checks"))
                for key, label in (("port25", _("Outbound port 25")), ("blacklists", _("Blacklists")),
                                   ("rdns", _("Reverse DNS")))]
    result, at = job.result.get("server") or {}, job.finished_at
    port25 = result.get("port25") or {}
    if port25.get("status") == "ok":
        port25_line = line("port25", _("Outbound port 25"), OK, _("Open."), checked_at=at, fix_url=run,
                           fix_label=_("Check again"))
    else:
        port25_line = line("port25", _("Outbound port 25"), BAD,
                           _("Blocked: %(detail)s") % {"detail": port25.get("detail") or port25.get("status", "")},
                           checked_at=at, fix_url=reverse("mailadmin:global_relay") + "#relay-section",
                           fix_label=_("Send through a relay"), details=port25.get("fixes") or ())
    rows = result.get("blacklist") or []
    listed = [f"{row['ip']} — {row['zone']}" for row in rows if row.get("status") == "listed"]
    unsure = [row for row in rows if row.get("status") not in ("listed", "not_listed")]
    if listed:
        blacklist_line = line("blacklists", _("Blacklists"), BAD,
                              ngettext("Listed on %(count)d list.", "Listed on %(count)d lists.", len(listed))
                              % {"count": len(listed)}, checked_at=at, details=listed,
                              fix_url=f"{run}?job={job.pk}", fix_label=_("What to do"))
    elif unsure or not rows:
        blacklist_line = line("blacklists", _("Blacklists"), WARN,
                              _("Some lists could not be asked.") if rows else _("No list was asked."),
                              checked_at=at, fix_url=reverse("mailadmin:server_blacklists"), fix_label=_("Lists"))
    else:
        blacklist_line = line("blacklists", _("Blacklists"), OK,
                              _("Not listed (%(count)d lists asked).") % {"count": len(rows)}, checked_at=at,
                              fix_url=reverse("mailadmin:server_blacklists"), fix_label=_("Lists"))
    rdns = result.get("rdns") or []
    wrong = [f"{row['ip']}: {', '.join(row.get('ptr') or ['—'])}" for row in rdns if row.get("status") != "ok"]
    rdns_line = line("rdns", _("Reverse DNS"), BAD if wrong or not rdns else OK,
                     _("Some addresses do not point back to %(host)s.") % {"host": server.hostname} if wrong
                     else _("Every address points back to %(host)s.") % {"host": server.hostname} if rdns
                     else _("No public address to check."),
                     checked_at=at, details=wrong, fix_url=f"{run}?job={job.pk}", fix_label=_("Details"))
    return [port25_line, blacklist_line, rdns_line]


def certificate_line(server) -> dict:
    layout = layout_from_settings()
    if not layout.tls_certificate:
        return line("certificate", _("TLS certificate"), WARN,
                    _("The mail server offers no TLS: passwords and mail cross the network readable."))
    cert = certificate.certificate_status(layout.path(layout.tls_certificate), server.hostname)
    summary = {
        certificate.OK: _("Valid until %(date)s (%(days)s days left)."),
        certificate.SOON: _("Expires %(date)s: %(days)s days left, and renewal should have happened by now."),
        certificate.EXPIRED: _("Expired on %(date)s: clients refuse to connect."),
        certificate.WRONG_NAME: _("It does not name %(host)s: clients refuse it."),
        certificate.UNKNOWN: _("Could not be read: %(detail)s"),
    }[cert.status] % {"date": cert.not_after[:10], "days": cert.days_left, "host": server.hostname,
                      "detail": cert.detail}
    state = {certificate.OK: OK, certificate.SOON: WARN, certificate.UNKNOWN: UNKNOWN}.get(cert.status, BAD)
    return line("certificate", _("TLS certificate"), state, summary, details=cert.names)


def acme_line() -> dict:
    """The ACME certificates (services.certificates): expiring soon, or the
    CA refused the last order (its own words in the details)."""
    rows = acme_certificates.attention()
    domain_url = reverse("mailadmin:domain_detail", args=[0]).removesuffix("0/")
    details = [
        (f"{row['name']}: {row['last_error'] or _('expires %(date)s') % {'date': (row['not_after'] or '')[:10]}}",
         f"{domain_url}{row['domain_id']}/#certificate" if row["domain_id"] else "")
        for row in rows
    ]
    expiring = sum(row["expiring"] for row in rows)
    if expiring:
        return line("acme", _("Certificates from the ACME CA"), BAD,
                    ngettext("%(count)d certificate expires within 14 days: renewal is failing.",
                             "%(count)d certificates expire within 14 days: renewal is failing.", expiring)
                    % {"count": expiring}, details=details)
    if rows:
        return line("acme", _("Certificates from the ACME CA"), WARN,
                    ngettext("The last order of %(count)d certificate failed; it is retried with a growing pause.",
                             "The last order of %(count)d certificates failed; they are retried with a growing pause.",
                             len(rows)) % {"count": len(rows)}, details=details)
    return line("acme", _("Certificates from the ACME CA"), OK,
                _("None expires within 14 days and no order failed."))


def domains_lines() -> list[dict]:
    counts = MailDomain.objects.aggregate(
        failing=Count("pk", filter=Q(dns_status__in=["missing", "different"])),
        unchecked=Count("pk", filter=Q(dns_status="")),
        pending=Count("pk", filter=Q(pending=True)),
    )
    failing = list(
        MailDomain.objects.filter(dns_status__in=["missing", "different"]).order_by("name").values_list("pk", "name")[:10]
    )
    dns_url = reverse("mailadmin:domain_dns", args=[0]).removesuffix("0/dns/")
    if counts["failing"]:
        dns_line = line("dns", _("Domains' DNS records"), BAD,
                        ngettext("%(count)d domain fails its DNS check.", "%(count)d domains fail their DNS check.",
                                 counts["failing"]) % {"count": counts["failing"]},
                        details=[(name, f"{dns_url}{pk}/dns/") for pk, name in failing],
                        fix_url=reverse("mailadmin:diagnostics"), fix_label=_("Check every domain"))
    elif counts["unchecked"]:
        dns_line = line("dns", _("Domains' DNS records"), WARN,
                        ngettext("%(count)d domain was never checked.", "%(count)d domains were never checked.",
                                 counts["unchecked"]) % {"count": counts["unchecked"]},
                        fix_url=reverse("mailadmin:diagnostics"), fix_label=_("Check every domain"))
    else:
        dns_line = line("dns", _("Domains' DNS records"), OK, _("Every domain passed its last check."),
                        fix_url=reverse("mailadmin:diagnostics"), fix_label=_("Check every domain"))
    pending_line = line("pending", _("Domains waiting for verification"), WARN if counts["pending"] else OK,
                        ngettext("%(count)d domain is pending.", "%(count)d domains are pending.", counts["pending"])
                        % {"count": counts["pending"]}, fix_url=reverse("mailadmin:domain_list"),
                        fix_label=_("Domains"))
    return [dns_line, pending_line]


def held_line() -> dict:
    held = SendHold.objects.count()
    return line("held", _("Held senders"), WARN if held else OK,
                ngettext("%(count)d sender passed its limit and waits for you.",
                         "%(count)d senders passed their limits and wait for you.", held) % {"count": held},
                fix_url=reverse("mailadmin:held_list"), fix_label=_("Held mail"))


def jobs_line() -> dict:
    since = timezone.now() - timedelta(days=FAILED_JOBS_DAYS)
    failed = list(Job.objects.filter(state=JobState.FAILED, finished_at__gte=since).only("pk", "kind").order_by("-id")[:11])
    details = [(f"{job.get_kind_display()} #{job.pk}", reverse("mailadmin:job_status", args=[job.pk])) for job in failed[:10]]
    if failed:
        return line("jobs", _("Failed jobs"), BAD,
                    ngettext("%(count)s job failed in the last %(days)d days.",
                             "%(count)s jobs failed in the last %(days)d days.", len(failed))
                    % {"count": "10+" if len(failed) > 10 else len(failed), "days": FAILED_JOBS_DAYS},
                    details=details, fix_url=reverse("mailadmin:job_list"), fix_label=_("Job log"))
    return line("jobs", _("Failed jobs"), OK, _("None in the last %(days)d days.") % {"days": FAILED_JOBS_DAYS},
                fix_url=reverse("mailadmin:job_list"), fix_label=_("Job log"))


def nodes_lines() -> list[dict]:
    """Several mail nodes (RQ): which of them stopped answering."""
    if not jobs.multi_node():
        return []
    rows = nodes.node_rows()
    url = reverse("mailadmin:node_list")
    silent = [row for row in rows if row.stale]
    if not silent:
        return [line("nodes", _("Mail nodes"), OK, ngettext("%(count)d node answers.", "%(count)d nodes answer.",
                                                           len(rows)) % {"count": len(rows)}, fix_url=url,
                     fix_label=_("Nodes"))]
    details = [
        ngettext("%(node)s: %(count)d apply waiting", "%(node)s: %(count)d applies waiting", row.pending_jobs)
        % {"node": row.node.name, "count": row.pending_jobs}
        for row in silent
    ]
    return [line("nodes", _("Mail nodes"), BAD,
                 _("Not answering: %(nodes)s. Their changes wait in their queues until their workers are back.")
                 % {"nodes": ", ".join(row.node.name for row in silent)},
                 fix_url=url, fix_label=_("Nodes"), details=details)]


def status_context(request) -> dict:
    server = server_of(request)
    lines = [identity_line(server), *diagnostics_lines(server), certificate_line(server), acme_line(), *domains_lines(),
             held_line(), jobs_line(), *nodes_lines()]
    return {"lines": lines, "worst": next((s for s in (BAD, WARN, UNKNOWN) if any(l["state"] == s for l in lines)), OK)}


def queue_context(request) -> dict:
    try:
        page = mail_queue.list_page(request.user, mail_queue.QueueFilter())
    except HelperError as exc:
        return {"queue": None, "queue_error": exc.message}
    return {"queue": page, "queue_error": ""}


STATUS = Section.of(PAGE, "status", status_context, lambda: reverse("mailadmin:server_status"))
QUEUE = Section.of(
    PAGE, "queue-line", queue_context, lambda: reverse("mailadmin:server_status_queue"),
    page_context=lambda request: status_context(request),
)


@require_GET
def server_status(request):
    require_admin(request)
    return respond(request, STATUS)


@require_GET
def server_status_queue(request):
    """The queue line alone, loaded after the page (a helper call)."""
    require_admin(request)
    return respond(request, QUEUE)
