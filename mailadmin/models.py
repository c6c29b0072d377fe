import functools

import idna
from django.conf import settings
from django.db import connections, models
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _

from mailconf.snapshot import ServerIdentity

from .crypto import EncryptedTextField


def display_domain(ascii_name: str) -> str:
    """Punycode → Unicode for people; stored names stay IDNA."""
    if "xn--" not in ascii_name:
        return ascii_name  # idna.decode costs ~0.5 ms; a list shows 50 names
    try:
        return idna.decode(ascii_name)
    except idna.IDNAError:
        return ascii_name


def is_admin(user) -> bool:
    return bool(user.is_authenticated and (user.is_staff or user.is_superuser))


def acts_as_admin(actor) -> bool:
    """For services: None (a background task) and the CLI act with an admin's powers."""
    return actor is None or is_admin(actor)


class MailDomainQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Every view that takes a domain goes through this: outsiders get 404."""
        if is_admin(user):
            return self.all()
        return self.filter(owner=user)

    def live(self):
        """What the mail server serves: verified, and the owner not suspended.
        Pending and suspended domains are left out of the rendered config
        entirely (not local, no mailboxes, no DKIM, no relay)."""
        return self.filter(pending=False).exclude(owner__mail_profile__suspended=True)


class NodeStatus(models.TextChoices):
    ACTIVE = "active", _("active")
    # Keeps its domains; new domains go to another node.
    DRAINING = "draining", _("takes no new domains")


# A node's name is a queue name (node-<name>) and a systemd instance name.
NODE_NAME_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?"
DEFAULT_NODE_NAME = "main"


class MailNode(models.Model):
    """A mail server the panel runs: its own Exim and Dovecot, its own helper
    and task worker (queue node-<name>). Each mail domain lives on one node.
    Blank addresses and host name mean the server settings' (the one-server
    install's single node keeps its identity there)."""

    name = models.CharField(_("name"), max_length=32, unique=True)
    hostname = models.CharField(_("hostname"), max_length=253, blank=True)
    ipv4 = models.GenericIPAddressField(_("public IPv4"), protocol="IPv4", null=True, blank=True)
    ipv6 = models.GenericIPAddressField(_("public IPv6"), protocol="IPv6", null=True, blank=True)
    status = models.CharField(_("status"), max_length=16, choices=NodeStatus.choices, default=NodeStatus.ACTIVE)
    # Written by the node's worker (services.nodes.beat): when it last
    # answered, when it last finished an apply, which mailpanel it runs.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    last_apply_at = models.DateTimeField(null=True, blank=True)
    version = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def queue_name(self) -> str:
        return f"node-{self.name}"

    def identity(self, server: "ServerSettings") -> ServerIdentity:
        """The node as its renderers, DNS records and checks see it."""
        own_ipv4 = self.ipv4 or ""
        return ServerIdentity(
            hostname=self.hostname or server.hostname,
            ipv4=own_ipv4 or server.ipv4 or "",
            ipv6=self.ipv6 or server.ipv6 or "",
            # The NAT address belongs to the server settings' public IPv4.
            nat_ipv4="" if own_ipv4 else server.nat_ipv4 or "",
        )


def default_node_pk() -> int:
    """Where a new domain lives unless it is placed: the first active node, made here
    when there is none yet (migration 0012 makes it for existing installs)."""
    nodes = MailNode.objects.order_by("pk").values_list("pk", flat=True)
    pk = nodes.filter(status=NodeStatus.ACTIVE).first() or nodes.first()
    if pk is None:
        pk = MailNode.objects.create(name=DEFAULT_NODE_NAME).pk
    return pk


class MailDomain(models.Model):
    name = models.CharField(_("domain"), max_length=253, unique=True)  # IDNA, lower case
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="mail_domains"
    )
    dkim_enabled = models.BooleanField(_("DKIM signing"), default=True)
    dkim_private_key = EncryptedTextField(blank=True)
    dkim_selector = models.CharField(_("DKIM selector"), max_length=63, default="mail")
    dkim_created_at = models.DateTimeField(null=True, blank=True)  # the signing key's age
    # A rotation (services.dkim_rotation): the next key waits here under its own
    # selector until the DNS check sees its record, then signs; the old public
    # key stays published until dkim_old_until, then the owner is told to
    # delete its record (dkim_old_public_key blank, dkim_old_selector kept).
    dkim_pending_private_key = EncryptedTextField(blank=True)
    dkim_pending_selector = models.CharField(max_length=63, blank=True)
    dkim_pending_created_at = models.DateTimeField(null=True, blank=True)
    dkim_old_selector = models.CharField(max_length=63, blank=True)
    dkim_old_public_key = models.TextField(blank=True)
    dkim_old_until = models.DateTimeField(null=True, blank=True)
    suspended = models.BooleanField(_("suspended"), default=False)
    # A customer's new domain waits here until a TXT record proves they hold
    # its DNS (see services.ownership); an admin's is verified at once.
    pending = models.BooleanField(_("ownership not yet verified"), default=False)
    verify_token = models.CharField(max_length=64, blank=True)
    hosted_elsewhere = models.BooleanField(_("mail hosted elsewhere (send-only)"), default=False)
    catchall = models.CharField(_("catch-all address"), max_length=254, blank=True)
    # postmaster@ and abuse@ (RFC 5321, RFC 2142): here, or the owner's email
    # address when blank; a mailbox or alias of that name wins.
    role_address = models.CharField(_("postmaster and abuse address"), max_length=254, blank=True)
    subaddressing = models.BooleanField(_("sub-addressing (user+tag@)"), default=True)
    # MTA-STS (RFC 8461): the policy says "testing" (senders report, deliver
    # anyway) until the owner switches to "enforce" (mailadmin/mta_sts.py).
    mta_sts_enforce = models.BooleanField(_("MTA-STS enforce"), default=False)
    # Unix users (web apps on this host) an admin allowed to send as this
    # domain with its relay and DKIM key; blank separated.
    local_senders = models.CharField(_("local senders"), max_length=512, blank=True)
    node = models.ForeignKey(
        MailNode, on_delete=models.PROTECT, related_name="domains", default=default_node_pk, verbose_name=_("mail node")
    )
    dns_status = models.CharField(max_length=16, blank=True)  # summary of the last DNS check
    dns_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = MailDomainQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["owner", "name"], name="domain_owner_name")]

    def __str__(self):
        return self.unicode_name

    def get_absolute_url(self):
        return reverse("mailadmin:domain_detail", args=[self.pk])

    @cached_property
    def unicode_name(self) -> str:
        return display_domain(self.name)


class UserProfile(models.Model):
    """What an admin sets per user: limits (None = no limit) and suspension.
    Suspension is a flag of its own, not a copy onto each domain: lifting it
    restores exactly the domains that were not suspended on their own."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="mail_profile"
    )
    max_domains = models.PositiveIntegerField(_("most mail domains"), null=True, blank=True)
    max_mailboxes = models.PositiveIntegerField(_("most mailboxes"), null=True, blank=True)
    max_quota_mb = models.PositiveIntegerField(_("most quota in total (MB)"), null=True, blank=True)
    suspended = models.BooleanField(_("suspended"), default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"profile of user {self.user_id}"

    @classmethod
    def for_user(cls, user) -> "UserProfile":
        """The stored profile, or an unsaved one with no limits."""
        return cls.objects.filter(user=user).first() or cls(user=user)


class MailAccount(models.Model):
    domain = models.ForeignKey(MailDomain, on_delete=models.CASCADE, related_name="accounts")
    local_part = models.CharField(_("local part"), max_length=64)
    password_hash = models.CharField(max_length=255)  # Dovecot-verifiable, never reversible
    quota_mb = models.PositiveIntegerField(_("quota (MB)"), default=0)  # 0 = unlimited
    forward_only = models.BooleanField(_("forward without keeping a local copy"), default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["local_part"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "local_part"], name="unique_account")
        ]

    def __str__(self):
        return f"{self.local_part}@{self.domain.unicode_name}"


class MailAlias(models.Model):
    domain = models.ForeignKey(MailDomain, on_delete=models.CASCADE, related_name="aliases")
    local_part = models.CharField(_("alias"), max_length=64)
    target = models.CharField(_("delivers to"), max_length=254)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["local_part", "target"]
        constraints = [
            models.UniqueConstraint(
                fields=["domain", "local_part", "target"], name="unique_alias_target"
            )
        ]

    def __str__(self):
        return f"{self.local_part}@{self.domain.name} → {self.target}"


class MailForward(models.Model):
    account = models.ForeignKey(MailAccount, on_delete=models.CASCADE, related_name="forwards")
    target = models.CharField(_("forward to"), max_length=254)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["target"]
        constraints = [
            models.UniqueConstraint(fields=["account", "target"], name="unique_forward")
        ]

    def __str__(self):
        return f"{self.account} → {self.target}"


class RelayAuth(models.TextChoices):
    LOGIN = "login", "LOGIN"
    PLAIN = "plain", "PLAIN"


class RelayTls(models.TextChoices):
    STARTTLS = "starttls", _("STARTTLS required")
    SSL = "ssl", _("implicit TLS (port 465)")
    NONE = "none", _("none (unencrypted)")


class RelaySettings(models.Model):
    """domain=None is the global relay; otherwise the domain's own relay."""

    domain = models.OneToOneField(
        MailDomain, null=True, blank=True, on_delete=models.CASCADE, related_name="relay"
    )
    preset = models.CharField(max_length=32, blank=True)
    host = models.CharField(_("host"), max_length=253)
    port = models.PositiveIntegerField(_("port"), default=587)
    tls = models.CharField(
        _("encryption"), max_length=8, choices=RelayTls.choices, default=RelayTls.STARTTLS
    )
    username = models.CharField(_("username"), max_length=255, blank=True)
    password = EncryptedTextField(_("password"), blank=True)
    auth = models.CharField(
        _("authentication"), max_length=8, choices=RelayAuth.choices, default=RelayAuth.LOGIN
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # NULLs are distinct in a plain unique index: coalesce so only one global row fits.
            models.UniqueConstraint(
                Coalesce("domain", models.Value(0)), name="one_relay_per_scope"
            )
        ]

    def __str__(self):
        return f"relay {self.host}:{self.port}"


class PanelSmtpSecurity(models.TextChoices):
    NONE = "none", _("none")
    STARTTLS = "starttls", _("STARTTLS")
    SSL = "ssl", _("SSL/TLS")


DEFAULT_DNSBL_ZONES = "zen.spamhaus.org"


class WebmailApp(models.TextChoices):
    """What https://<host name>/webmail/ serves (mailconf.snapshot.WEBMAIL_APPS)."""

    SNAPPYMAIL = "snappymail", "SnappyMail"
    ROUNDCUBE = "roundcube", "Roundcube"


class ServerSettings(models.Model):
    """One row (pk=1): the server-wide settings an admin edits."""

    hostname = models.CharField(_("hostname"), max_length=253, default="localhost.localdomain")
    ipv4 = models.GenericIPAddressField(_("public IPv4"), protocol="IPv4", null=True, blank=True)
    ipv6 = models.GenericIPAddressField(_("public IPv6"), protocol="IPv6", null=True, blank=True)
    nat_ipv4 = models.GenericIPAddressField(
        _("NAT IPv4 (if behind NAT)"), protocol="IPv4", null=True, blank=True
    )
    internal_lookup = models.BooleanField(_("internal lookup"), default=True)
    customers_add_domains = models.BooleanField(_("customers may add mail domains"), default=True)
    dqs_key = EncryptedTextField(_("Spamhaus DQS key"), blank=True)
    dnsbl_zones = models.TextField(_("DNSBL zones"), default=DEFAULT_DNSBL_ZONES, blank=True)

    panel_smtp_enabled = models.BooleanField(_("send panel mail through SMTP"), default=False)
    panel_smtp_host = models.CharField(_("SMTP host"), max_length=253, blank=True)
    panel_smtp_port = models.PositiveIntegerField(_("SMTP port"), default=587)
    panel_smtp_security = models.CharField(
        _("security"),
        max_length=8,
        choices=PanelSmtpSecurity.choices,
        default=PanelSmtpSecurity.STARTTLS,
    )
    panel_smtp_username = models.CharField(_("username"), max_length=255, blank=True)
    panel_smtp_password = EncryptedTextField(_("password"), blank=True)
    panel_smtp_from = models.EmailField(_("From address"), blank=True)

    dkim_grace_days = models.PositiveSmallIntegerField(
        _("days an old DKIM key stays published after a rotation"), default=7
    )
    dkim_max_age_months = models.PositiveSmallIntegerField(
        _("warn when a DKIM key is older than (months)"), default=12
    )

    sieve_enabled = models.BooleanField(_("ManageSieve"), default=False)
    sieve_external = models.BooleanField(_("allow external mail clients"), default=False)

    snappymail_installed = models.BooleanField(default=False)
    snappymail_admin_login = models.CharField(max_length=64, blank=True)
    snappymail_admin_password_hash = EncryptedTextField(blank=True)
    snappymail_admin_key = EncryptedTextField(blank=True)
    snappymail_credentials_file = models.BooleanField(default=False)
    webmail = models.CharField(
        _("webmail"), max_length=16, choices=WebmailApp.choices, default=WebmailApp.SNAPPYMAIL
    )

    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("server settings")

    def __str__(self):
        return "server settings"

    SECRET_FIELDS = (
        "dqs_key",
        "panel_smtp_password",
        "snappymail_admin_password_hash",
        "snappymail_admin_key",
    )

    @classmethod
    def load(cls) -> "ServerSettings":
        obj, _created = cls.objects.get_or_create(pk=1)
        return obj

    def identity(self) -> ServerIdentity:
        """The server as the renderers, the DNS records and the checks see it."""
        return ServerIdentity(
            hostname=self.hostname, ipv4=self.ipv4 or "", ipv6=self.ipv6 or "", nat_ipv4=self.nat_ipv4 or ""
        )

    @classmethod
    def load_public(cls) -> "ServerSettings":
        """Identity and switches only, for pages every customer sees: the
        secrets are not fetched, so not decrypted (four Fernet tokens a load);
        reading one later is a query for that field alone, as with defer().
        One statement written once per process (raw() defers the columns it
        does not select): the ORM spent ~0.25 ms building the deferred query
        on every DNS and clients tab."""
        found = list(cls.objects.raw(_public_settings_sql(cls.objects.db), [1]))
        return found[0] if found else cls.load()


@functools.cache
def _public_settings_sql(using: str) -> str:
    qn = connections[using].ops.quote_name
    meta = ServerSettings._meta
    columns = [qn(f.column) for f in meta.concrete_fields if f.name not in ServerSettings.SECRET_FIELDS]
    return f"SELECT {', '.join(columns)} FROM {qn(meta.db_table)} WHERE {qn(meta.pk.column)} = %s"


class JobState(models.TextChoices):
    PENDING = "pending", _("pending")
    RUNNING = "running", _("running")
    DONE = "done", _("done")
    FAILED = "failed", _("failed")


class JobKind(models.TextChoices):
    APPLY = "apply", _("apply configuration")
    SNAPPYMAIL_INSTALL = "snappymail_install", _("install SnappyMail")
    DIAGNOSE = "diagnose", _("diagnostics")
    DNS_CHECK = "dns_check", _("DNS check")
    DMARC_REPORTS = "dmarc_reports", _("read DMARC reports")
    HOLD_RELEASE = "hold_release", _("release or delete held mail")
    # done at once; a row so the per-user limit (services/user_checks.py) counts it
    LOG_SEARCH = "log_search", _("search the mail logs")
    # a domain's certificate ordered from its page (services/certificates.start_order)
    CERTIFICATE_ORDER = "certificate_order", _("order a certificate")


class Job(models.Model):
    """A background job as the job log shows it: an apply, an install, a check,
    a report read (JobKind); the django.tasks result only drives execution."""

    kind = models.CharField(max_length=24, choices=JobKind.choices, default=JobKind.APPLY)
    state = models.CharField(
        max_length=8, choices=JobState.choices, default=JobState.PENDING, db_index=True
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    domain = models.ForeignKey(
        MailDomain, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    log = models.TextField(blank=True)
    changed_files = models.JSONField(default=list, blank=True)
    result = models.JSONField(default=dict, blank=True)
    # Apply jobs: null = the whole server; a list = only these domains' files
    # (a relay or account change rewrites one folder, not 50,000 files).
    scope = models.JSONField(null=True, blank=True)
    # Apply jobs: the node whose worker applies it (queue node-<name>).
    node = models.ForeignKey(MailNode, null=True, blank=True, on_delete=models.CASCADE, related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.get_kind_display()} #{self.pk} {self.state}"

    @property
    def finished(self) -> bool:
        return self.state in (JobState.DONE, JobState.FAILED)


class AuditEntry(models.Model):
    """Who changed what: field names only, never values (they may be secrets)."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    actor_name = models.CharField(max_length=150)
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=300, blank=True)
    fields = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-at", "-id"]

    def __str__(self):
        return f"{self.actor_name} {self.action} {self.target}"


class DnsCheckResult(models.Model):
    domain = models.ForeignKey(MailDomain, on_delete=models.CASCADE, related_name="dns_checks")
    checked_at = models.DateTimeField(db_index=True)
    summary = models.CharField(max_length=16)
    results = models.JSONField(default=list)

    class Meta:
        ordering = ["-checked_at", "-id"]

    def __str__(self):
        return f"DNS check {self.domain_id} {self.summary}"


class PasswordResetRequest(models.Model):
    """Reset mails asked for, counted to stop the form from flooding a mailbox."""

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    email = models.CharField(max_length=254, db_index=True)
    ip = models.GenericIPAddressField(null=True, blank=True)

    def __str__(self):
        return f"{self.email} {self.ip} {self.at}"


class DmarcMailbox(models.Model):
    """Where a domain's DMARC aggregate reports go (the rua= of its DMARC
    record): a mailbox the panel made for it and reads over IMAP with a
    password only the panel knows (services.dmarc_reports)."""

    domain = models.OneToOneField(MailDomain, on_delete=models.CASCADE, related_name="dmarc_mailbox")
    account = models.OneToOneField(MailAccount, on_delete=models.CASCADE, related_name="dmarc_for")
    password = EncryptedTextField()
    read_at = models.DateTimeField(null=True, blank=True)
    problem = models.CharField(max_length=300, blank=True)  # the last read's trouble, for the owner

    def __str__(self):
        return f"DMARC reports of {self.domain_id}"


class DmarcReport(models.Model):
    """One aggregate report (RFC 7489 appendix C) a receiver sent about a domain."""

    domain = models.ForeignKey(MailDomain, on_delete=models.CASCADE, related_name="dmarc_reports")
    org_name = models.CharField(max_length=200)
    report_id = models.CharField(max_length=200)
    begin = models.DateTimeField()
    end = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-begin", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["domain", "org_name", "report_id"], name="unique_dmarc_report")
        ]

    def __str__(self):
        return f"DMARC report {self.org_name} {self.report_id}"


class DmarcRow(models.Model):
    """One <record> of a report: messages from one source IP with one outcome."""

    report = models.ForeignKey(DmarcReport, on_delete=models.CASCADE, related_name="rows")
    domain = models.ForeignKey(MailDomain, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()  # the report's first day (UTC)
    source_ip = models.GenericIPAddressField()
    source = models.CharField(max_length=8)  # server | relay | other
    count = models.PositiveIntegerField()
    disposition = models.CharField(max_length=12)  # none | quarantine | reject
    dkim_aligned = models.BooleanField()
    spf_aligned = models.BooleanField()

    class Meta:
        indexes = [models.Index(fields=["domain", "day"], name="dmarc_row_domain_day")]

    def __str__(self):
        return f"{self.source_ip} ×{self.count}"


class SendLimit(models.Model):
    """Sending limits of one scope: the server's defaults (no domain, no
    account), a domain's, or a mailbox's. Blank = the wider scope's value
    (mailbox → domain → server; the server's blank = no limit); 0 = no limit
    here. Exim counts with ratelimit: messages per hour and per day, and
    refuses recipients past the per-message limit (452, try again)."""

    domain = models.OneToOneField(
        MailDomain, null=True, blank=True, on_delete=models.CASCADE, related_name="send_limit"
    )
    account = models.OneToOneField(
        MailAccount, null=True, blank=True, on_delete=models.CASCADE, related_name="send_limit"
    )
    per_hour = models.PositiveIntegerField(_("messages per hour"), null=True, blank=True)
    per_day = models.PositiveIntegerField(_("messages per day"), null=True, blank=True)
    recipients = models.PositiveIntegerField(_("recipients per message"), null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                Coalesce("domain", models.Value(0)), Coalesce("account", models.Value(0)),
                name="one_send_limit_per_scope",
            ),
            models.CheckConstraint(
                condition=models.Q(domain__isnull=True) | models.Q(account__isnull=True),
                name="send_limit_one_scope",
            ),
        ]

    def __str__(self):
        return f"send limit {self.domain_id or '-'}/{self.account_id or '-'}"


class SendHold(models.Model):
    """A sender that passed its limit: Exim holds (freezes) its mail and its
    sending stays suspended (held_senders) until someone releases or deletes
    the held mail. local_part "*" = the domain's local submissions (its
    mapped Unix users). One row per incident; the owner and the admins got
    one mail about it (notified_at)."""

    domain = models.ForeignKey(MailDomain, on_delete=models.CASCADE, related_name="send_holds")
    local_part = models.CharField(max_length=64)
    reason = models.CharField(max_length=16)  # hour | day | suspended
    held_count = models.PositiveIntegerField(default=0)
    # top recipients and sources [[name, count], ...], first and last arrival
    summary = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["domain", "local_part"], name="one_hold_per_sender")]

    def __str__(self):
        return f"hold {self.local_part}@{self.domain_id}"

    @property
    def sender_key(self) -> str:
        """The identity Exim holds it under (acl_m_mp_sender)."""
        return f"{self.local_part}@{self.domain.name}"



class MailboxVacation(models.Model):
    """A mailbox's out-of-office reply as its owner last saved it in the panel
    (services.mailbox): what the page shows. The reply itself is a Sieve
    script the panel uploaded over ManageSieve with the owner's password at
    that moment; nothing here can change it later."""

    account = models.OneToOneField(MailAccount, on_delete=models.CASCADE, related_name="vacation")
    enabled = models.BooleanField(_("send an out-of-office reply"), default=False)
    subject = models.CharField(_("subject"), max_length=200, blank=True)
    body = models.TextField(_("message"), blank=True)
    start = models.DateField(_("from"), null=True, blank=True)  # None: at once
    end = models.DateField(_("until"), null=True, blank=True)  # None: until switched off
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"vacation of account {self.account_id}"


class AcmeAccount(models.Model):
    """The panel's account at one ACME CA (services.certificates). The account
    key is a secret: encrypted at rest, never shown, never logged."""

    directory = models.URLField(max_length=500, unique=True)
    key = EncryptedTextField()  # the account key as a JWK (JSON)
    uri = models.URLField(max_length=500, blank=True)  # the account's URL at the CA ("kid")
    email = models.CharField(max_length=254, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return f"ACME account at {self.directory}"


class Certificate(models.Model):
    """One certificate from the ACME CA and its lifecycle: the server's host
    name (server=True) or one mail domain's names (one order, all of them).
    What is installed (names, issuer, not_after) changes only when the helper
    installed a new chain; a failed order leaves it and records the CA's own
    message, the failures in a row and when the next attempt may be made."""

    domain = models.OneToOneField(
        MailDomain, null=True, blank=True, on_delete=models.CASCADE, related_name="certificate"
    )
    server = models.BooleanField(default=False)
    # A server row with several mail nodes (MAILPANEL_TASK_BACKEND=rq): each
    # node has its own host name's certificate, ordered by its own worker.
    # Null on a one-server install (its one server row).
    node = models.ForeignKey(
        MailNode, null=True, blank=True, on_delete=models.CASCADE, related_name="server_certificates"
    )
    names = models.JSONField(default=list, blank=True)  # on the installed certificate
    # The names of the domain's that did not point here at the last order:
    # [{"name": N, "reason": R}] (shown as "not pointing here").
    left_out = models.JSONField(default=list, blank=True)
    issuer = models.CharField(max_length=300, blank=True)
    not_after = models.DateTimeField(null=True, blank=True)
    issued_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)  # the CA's own message; "" after a success
    attempts = models.PositiveIntegerField(default=0)  # failures in a row
    next_attempt_at = models.DateTimeField(null=True, blank=True)  # backoff: not before
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["server"], condition=models.Q(server=True, node__isnull=True), name="one_server_certificate"
            ),
            models.UniqueConstraint(
                fields=["node"], condition=models.Q(server=True), name="one_server_certificate_per_node"
            ),
            models.CheckConstraint(
                condition=models.Q(server=True) | models.Q(node__isnull=True), name="certificate_node_only_server"
            ),
            models.CheckConstraint(
                condition=models.Q(server=True, domain__isnull=True) | models.Q(server=False, domain__isnull=False),
                name="certificate_server_or_domain",
            ),
        ]

    def __str__(self):
        return "server certificate" if self.server else f"certificate of domain {self.domain_id}"


class MovePhase(models.TextChoices):
    """A domain moving between nodes (services/domain_move.py), in order."""

    PREPARING = "preparing", _("the new node takes the domain's files")
    COPYING = "copying", _("copying mail to the new node")
    FORWARDING = "forwarding", _("the old node forwards; waiting for confirmation")
    FINISHING = "finishing", _("final copy; the old node lets go")
    DONE = "done", _("done")


class DomainMove(models.Model):
    """A domain's move from one node to another. Until it is done the old
    node still accepts the domain's mail (from the forwarding phase on it
    sends all of it to the new node) and keeps its mailboxes for the copy."""

    domain = models.ForeignKey(MailDomain, on_delete=models.CASCADE, related_name="moves")
    from_node = models.ForeignKey(MailNode, on_delete=models.PROTECT, related_name="+")
    to_node = models.ForeignKey(MailNode, on_delete=models.PROTECT, related_name="+")
    phase = models.CharField(max_length=16, choices=MovePhase.choices, default=MovePhase.PREPARING)
    error = models.TextField(blank=True)  # the last phase's failure; "" once it went on
    log = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["domain"], condition=~models.Q(phase="done"), name="one_live_move_per_domain"
            ),
        ]

    def __str__(self):
        return f"move of domain {self.domain_id}: {self.phase}"
