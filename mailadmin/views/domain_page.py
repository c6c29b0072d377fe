"""The domain page: tabs with their own URLs — Overview, Accounts, Relay, DNS,
Webmail and clients, Settings. Each tab is a link that works without
JavaScript; htmx swaps the tab and pushes its URL. A view renders only its
tab. The tabs are listed in views.pages; the tabs of other features are
defined next to their views (accounts, relay, dns); this module holds the
Overview, Webmail and Settings tabs."""

from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from ..dnsrecords import ownership_record
from ..forms import DomainSettingsForm, LocalSendersForm
from ..models import Certificate, MailAccount, MailAlias, MailDomain, MailNode, RelaySettings, ServerSettings, WebmailApp, is_admin
from ..services import certificates, client_config, domain_move, user_checks
from ..services import domains as domain_service
from .common import get_domain_for_user, server_of
from .pages import DOMAIN_PAGE
from .shell import done, respond

# --- Overview -------------------------------------------------------------------


def overview_context(request, domain) -> dict:
    """The counts and the relay in one statement. Plain SQL (the same on
    SQLite and PostgreSQL): the ORM's four subquery annotations took a third
    of the tab's time to build, for four numbers."""
    tables = {name: model._meta.db_table for name, model in
              (("accounts", MailAccount), ("aliases", MailAlias), ("relays", RelaySettings))}
    sql = (
        f"SELECT (SELECT COUNT(*) FROM {tables['accounts']} WHERE domain_id = %s),"
        f" (SELECT COUNT(*) FROM {tables['aliases']} WHERE domain_id = %s),"
        f" (SELECT host FROM {tables['relays']} WHERE domain_id = %s),"
        f" (SELECT port FROM {tables['relays']} WHERE domain_id = %s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [domain.pk] * 4)
        accounts, aliases, relay_host, relay_port = cursor.fetchone()
    return {
        "overview": {"account_count": accounts, "alias_count": aliases, "relay_host": relay_host, "relay_port": relay_port}
    }


def ownership_context(request, domain, verdict=None) -> dict:
    """The Verify section of a pending domain (with the last lookup's verdict)."""
    if not domain.pending:
        return {"ownership_record": None}
    return {
        "domain": domain,
        "ownership_record": ownership_record(domain.name, domain.verify_token),
        "ownership_verdict": verdict,
    }


def certificate_context(request, domain) -> dict:
    """The domain's certificate from the ACME CA (services.certificates):
    its names, the names left out and why, the CA's last error."""
    cert = Certificate.objects.filter(domain=domain).first()
    job = certificates.order_job(domain)
    return {"domain": domain, "certificate": cert,
            "certificate_waiting": bool(cert and cert.attempts and cert.next_attempt_at),
            # "Order certificate now": who may, and until when a customer waits
            "certificate_orderable": not (domain.pending or domain.suspended or domain.hosted_elsewhere),
            "certificate_order_until": certificates.waiting_until(cert, timezone.now()),
            "certificate_order_admin": is_admin(request.user),
            "certificate_order_job": job,
            "certificate_order_error": certificates.order_error(job)}


OVERVIEW_TAB = DOMAIN_PAGE.tab(
    "overview", "mailadmin/domain/overview.html", ownership_context, overview_context, certificate_context
)
OWNERSHIP = DOMAIN_PAGE.section("overview", "ownership", "mailadmin/ownership/section.html#ownership", ownership_context)
CERTIFICATE = DOMAIN_PAGE.section(
    "overview", "certificate", "mailadmin/domain/certificate.html#certificate", certificate_context
)


@require_GET
def domain_detail(request, domain_id):
    return respond(request, OVERVIEW_TAB, get_domain_for_user(request, domain_id))


@require_GET
def domain_certificate(request, domain_id):
    return respond(request, CERTIFICATE, get_domain_for_user(request, domain_id))


@require_POST
def domain_certificate_order(request, domain_id):
    """"Order certificate now": the order as a job; the section polls it."""
    domain = get_domain_for_user(request, domain_id)
    try:
        job = certificates.start_order(request.user, domain)
    except user_checks.TooManyChecks as exc:
        return respond(request, CERTIFICATE, domain, status=429, error=str(exc))
    except certificates.OrderRefused as exc:
        return respond(request, CERTIFICATE, domain, status=409, error=str(exc))
    return done(request, CERTIFICATE, domain, notice=_("The certificate order has started (job %(id)s).") % {"id": job.pk})


# --- Webmail and clients ------------------------------------------------------------


def webmail_url(hostname: str) -> str:
    """SnappyMail on the host name, whose certificate is valid
    (mailconf/render/webmail.py); http://webmail.<domain>/ redirects there."""
    return f"https://{hostname}/webmail/"


def client_settings(domain, server=None, settings=None) -> dict:
    """What a mail client needs; the same for every account of the domain,
    and only what the server offers: the ports that really have TLS (none
    without a certificate) and the name on the certificate clients get —
    what autoconfig and autodiscover say too (client_config)."""
    server = server or ServerSettings.load_public()
    settings = settings or client_config.client_settings(domain, server)

    def rows(protocol):
        return [{"port": s.port, "tls": s.tls} for s in settings.offered(protocol)]

    return {
        "server": settings.host,
        "incoming": rows("imap"),
        "outgoing": rows("smtp"),
        "tls": settings.tls,
        "webmail_url": webmail_url(domain.node.identity(server).hostname),
    }


def clients_context(request, domain) -> dict:
    server = server_of(request)
    accounts = list(domain.accounts.order_by("local_part").values("pk", "local_part"))
    example = accounts[0]["local_part"] if accounts else "info"
    settings = client_config.client_settings(domain, server)
    return {
        "client_settings": client_settings(domain, server, settings),
        "client_certificate_names": client_config.certificate_names(domain, settings),
        "client_example_address": f"{example}@{domain.unicode_name}",
        "client_accounts": accounts,
        # SnappyMail once installed; Roundcube (Debian's package) whenever chosen
        "webmail_installed": server.snappymail_installed or server.webmail == WebmailApp.ROUNDCUBE,
        "webmail_url": webmail_url(domain.node.identity(server).hostname),
    }


CLIENTS_TAB = DOMAIN_PAGE.tab("clients", "mailadmin/domain/clients.html", clients_context)


@require_GET
def domain_clients(request, domain_id):
    return respond(request, CLIENTS_TAB, get_domain_for_user(request, domain_id))


# --- Settings -----------------------------------------------------------------------


def settings_context(request, domain, form=None, senders=None) -> dict:
    return {
        "domain": domain,
        "settings_form": form,
        "senders_form": senders,
    }


def node_context(request, domain) -> dict:
    """Admins: the node the domain lives on, and where it may move."""
    if not is_admin(request.user):
        return {}
    move = domain_move.live_move(domain)
    return {
        "node_identity": domain.node.identity(server_of(request)),
        "node_choices": list(MailNode.objects.only("pk", "name").order_by("name")),
        "node_move": move,
        "node_move_changes": domain_move.dns_changes(move, server_of(request)) if move else (),
    }


SETTINGS_TAB = DOMAIN_PAGE.tab("settings", "mailadmin/domain/settings.html", settings_context, node_context)
SETTINGS_SECTION_FOR_NODE = DOMAIN_PAGE.section(
    "settings", "domain-node", "mailadmin/domain/settings.html#domain-node",
    lambda request, domain: {"domain": domain, **node_context(request, domain)},
)
DOMAIN_SETTINGS = DOMAIN_PAGE.section(
    "settings", "domain-settings", "mailadmin/domain/settings.html#domain-settings", settings_context
)


@require_http_methods(["GET", "POST"])
def domain_settings(request, domain_id):
    domain = get_domain_for_user(request, domain_id)
    if request.method == "GET":
        return respond(request, SETTINGS_TAB, domain)
    form = DomainSettingsForm(request.POST, instance=MailDomain.objects.get(pk=domain.pk))
    senders = LocalSendersForm(request.POST) if is_admin(request.user) else None
    if form.is_valid() and (senders is None or senders.is_valid()):
        changes = {field: form.cleaned_data[field] for field in DomainSettingsForm.Meta.fields}
        if senders is not None:  # customers cannot lift (or set) a suspension, nor map users
            changes["suspended"] = request.POST.get("suspended") == "on"
            changes["local_senders"] = senders.cleaned_data["local_senders"]
        try:
            change = domain_service.update_domain(request.user, domain, **changes)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return done(
                request,
                DOMAIN_SETTINGS,
                change.object,
                notice=_("Settings saved. The mail server is being updated.") if change.job else _("Nothing changed."),
                job=change.job,
            )
    problems = [e for f in (form, senders) if f is not None for errors in f.errors.values() for e in errors]
    return respond(
        request,
        DOMAIN_SETTINGS,
        domain,
        status=400,
        error=_("The settings could not be saved: %(problems)s") % {"problems": " ".join(problems)},
        form=form,
        senders=senders,
    )
