from django.urls import include, path

from .views import (
    accounts,
    admin,
    diagnostics,
    dkim,
    dmarc,
    dns,
    domain_page,
    domains,
    jobs,
    nodes,
    ownership,
    relay,
    server_mail,
    sieve,
    snappymail,
    status,
    webmail,
)

app_name = "mailadmin"

urlpatterns = [
    path("", domains.domain_list, name="domain_list"),
    path("domains/add/", domains.domain_add, name="domain_add"),
    # The domain page's tabs: Overview, Accounts, Relay, DNS, Webmail and clients, Settings.
    path("domains/<int:domain_id>/", domain_page.domain_detail, name="domain_detail"),
    path("domains/<int:domain_id>/certificate/", domain_page.domain_certificate, name="domain_certificate"),
    path("domains/<int:domain_id>/certificate/order/", domain_page.domain_certificate_order, name="domain_certificate_order"),
    path("domains/<int:domain_id>/accounts/", accounts.domain_accounts, name="domain_accounts"),
    path("domains/<int:domain_id>/relay/", relay.domain_relay, name="domain_relay"),
    path("domains/<int:domain_id>/dns/", dns.domain_dns, name="domain_dns"),
    path("domains/<int:domain_id>/clients/", domain_page.domain_clients, name="domain_clients"),
    path("domains/<int:domain_id>/settings/", domain_page.domain_settings, name="domain_settings"),
    path("domains/<int:domain_id>/dkim/", dkim.domain_dkim, name="domain_dkim"),
    path("domains/<int:domain_id>/dmarc/", dmarc.domain_dmarc, name="domain_dmarc"),
    path("domains/<int:domain_id>/delete/", domains.domain_delete, name="domain_delete"),
    path("domains/<int:domain_id>/verify/", ownership.domain_verify, name="domain_verify"),
    path("domains/<int:domain_id>/accounts/add/", accounts.account_add, name="account_add"),
    path("domains/<int:domain_id>/accounts/<int:account_id>/", accounts.account_edit, name="account_edit"),
    path("domains/<int:domain_id>/accounts/<int:account_id>/delete/", accounts.account_delete, name="account_delete"),
    path("domains/<int:domain_id>/accounts/<int:account_id>/forwards/add/", accounts.forward_add, name="forward_add"),
    path(
        "domains/<int:domain_id>/accounts/<int:account_id>/forwards/<int:forward_id>/delete/",
        accounts.forward_delete,
        name="forward_delete",
    ),
    path("domains/<int:domain_id>/accounts/usage/", accounts.account_usage, name="account_usage"),
    path("domains/<int:domain_id>/accounts/password-strength/", accounts.password_strength, name="account_password_strength"),
    path("domains/<int:domain_id>/aliases/add/", accounts.alias_add, name="alias_add"),
    path("domains/<int:domain_id>/aliases/<int:alias_id>/delete/", accounts.alias_delete, name="alias_delete"),
    path("domains/<int:domain_id>/catchall/", accounts.catchall_set, name="catchall_set"),
    path("jobs/", jobs.job_list, name="job_list"),
    path("jobs/<int:job_id>/", jobs.job_status, name="job_status"),
    path("audit/", jobs.audit_list, name="audit_list"),
    path("status/", status.server_status, name="server_status"),
    path("nodes/", nodes.node_list, name="node_list"),
    path("domains/<int:domain_id>/node/", nodes.domain_move, name="domain_move"),
    path("status/queue/", status.server_status_queue, name="server_status_queue"),
    path("users/", admin.user_list, name="user_list"),
    path("users/add/", admin.user_add, name="user_add"),
    path("users/<int:user_id>/active/", admin.user_active, name="user_active"),
    path("users/<int:user_id>/", admin.user_detail, name="user_detail"),
    path("users/<int:user_id>/limits/", admin.user_limits, name="user_limits"),
    path("users/<int:user_id>/suspend/", admin.user_suspend, name="user_suspend"),
    path("settings/server/customer-domains/", admin.customer_domains_save, name="customer_domains_save"),
    # The server settings page's tabs: Server, Global relay, Panel mail, Blacklists, Webmail and filters.
    path("settings/server/", admin.server_settings, name="server_settings"),
    path("settings/server/relay/", relay.global_relay, name="global_relay"),
    path("settings/server/panel-smtp/", server_mail.panel_smtp_tab, name="panel_smtp"),
    path("settings/server/blacklists/", server_mail.blacklists_tab, name="server_blacklists"),
    path("settings/server/webmail/", snappymail.webmail_tab, name="server_webmail"),
    path("domains/<int:domain_id>/relay/remove/", relay.domain_relay_remove, name="domain_relay_remove"),
    path("domains/<int:domain_id>/relay/test/", relay.domain_relay_test, name="domain_relay_test"),
    path(
        "domains/<int:domain_id>/relay/test/<int:job_id>/",
        relay.domain_relay_test_result,
        name="domain_relay_test_result",
    ),
    path("settings/server/relay/remove/", relay.global_relay_remove, name="global_relay_remove"),
    path("settings/server/relay/test/", relay.global_relay_test, name="global_relay_test"),
    path(
        "settings/server/relay/test/<int:job_id>/", relay.global_relay_test_result, name="global_relay_test_result"
    ),
    path("settings/server/panel-smtp/test/", server_mail.panel_smtp_test, name="panel_smtp_test"),
    path("settings/server/dqs/", server_mail.dqs_save, name="dqs_save"),
    path("settings/server/dnsbl/", server_mail.dnsbl_save, name="dnsbl_save"),
    path("settings/server/internal-lookup/", server_mail.internal_lookup_save, name="internal_lookup_save"),
    path("settings/server/snappymail/install/", snappymail.snappymail_install, name="snappymail_install"),
    path("settings/server/snappymail/credentials/", snappymail.snappymail_credentials, name="snappymail_credentials"),
    path(
        "settings/server/snappymail/credentials/delete/",
        snappymail.snappymail_credentials_delete,
        name="snappymail_credentials_delete",
    ),
    path("settings/server/sieve/", sieve.sieve_save, name="sieve_save"),
    path("settings/server/webmail/app/", webmail.webmail_save, name="webmail_save"),
    path("settings/server/dkim/", dkim.dkim_policy_save, name="dkim_policy_save"),
    path("domains/<int:domain_id>/dns/check/", dns.domain_dns_check, name="domain_dns_check"),
    path(
        "domains/<int:domain_id>/dns/check/<int:job_id>/",
        dns.domain_dns_check_status,
        name="domain_dns_check_status",
    ),
    path("domains/<int:domain_id>/dns/zone/", dns.domain_dns_zone, name="domain_dns_zone"),
    path("diagnostics/", diagnostics.diagnostics, name="diagnostics"),
    path("diagnostics/run/", diagnostics.diagnostics_run, name="diagnostics_run"),
    path("diagnostics/jobs/<int:job_id>/", diagnostics.diagnostics_job, name="diagnostics_job"),
]

# Sending: the mail queue, held senders, "where is my mail?", sending limits.
urlpatterns += [path("", include("mailadmin.urls_sending"))]

# Mailbox self-service, and the Apple profile of one mailbox.
urlpatterns += [path("", include("mailadmin.urls_mailbox"))]
