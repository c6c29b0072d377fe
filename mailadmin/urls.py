from django.contrib.auth import views as auth_views
from django.urls import path

from .views import admin, auth, domains, jobs
from .views import accounts
from .views import relay
from .views import server_mail
from .views import sieve, snappymail
from .views import diagnostics, dns

app_name = "mailadmin"

urlpatterns = [
    path("", domains.domain_list, name="domain_list"),
    path("domains/add/", domains.domain_add, name="domain_add"),
    path("domains/<int:domain_id>/", domains.domain_detail, name="domain_detail"),
    path("domains/<int:domain_id>/settings/", domains.domain_settings, name="domain_settings"),
    path("domains/<int:domain_id>/dkim/", domains.domain_dkim, name="domain_dkim"),
    path("domains/<int:domain_id>/delete/", domains.domain_delete, name="domain_delete"),
    path("domains/<int:domain_id>/accounts/add/", accounts.account_add, name="account_add"),
    path("domains/<int:domain_id>/accounts/<int:account_id>/", accounts.account_edit, name="account_edit"),
    path("domains/<int:domain_id>/accounts/<int:account_id>/delete/", accounts.account_delete, name="account_delete"),
    path("domains/<int:domain_id>/accounts/<int:account_id>/forwards/add/", accounts.forward_add, name="forward_add"),
    path(
        "domains/<int:domain_id>/accounts/<int:account_id>/forwards/<int:forward_id>/delete/",
        accounts.forward_delete,
        name="forward_delete",
    ),
    path("domains/<int:domain_id>/accounts/password-strength/", accounts.password_strength, name="account_password_strength"),
    path("domains/<int:domain_id>/aliases/add/", accounts.alias_add, name="alias_add"),
    path("domains/<int:domain_id>/aliases/<int:alias_id>/delete/", accounts.alias_delete, name="alias_delete"),
    path("domains/<int:domain_id>/catchall/", accounts.catchall_set, name="catchall_set"),
    path("jobs/", jobs.job_list, name="job_list"),
    path("jobs/<int:job_id>/", jobs.job_status, name="job_status"),
    path("audit/", jobs.audit_list, name="audit_list"),
    path("users/", admin.user_list, name="user_list"),
    path("users/add/", admin.user_add, name="user_add"),
    path("settings/server/", admin.server_settings, name="server_settings"),
    path("domains/<int:domain_id>/relay/", relay.domain_relay_save, name="domain_relay_save"),
    path("domains/<int:domain_id>/relay/remove/", relay.domain_relay_remove, name="domain_relay_remove"),
    path("domains/<int:domain_id>/relay/test/", relay.domain_relay_test, name="domain_relay_test"),
    path("settings/server/relay/", relay.global_relay_save, name="global_relay_save"),
    path("settings/server/relay/remove/", relay.global_relay_remove, name="global_relay_remove"),
    path("settings/server/relay/test/", relay.global_relay_test, name="global_relay_test"),
    path("settings/server/panel-smtp/", server_mail.panel_smtp_save, name="panel_smtp_save"),
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
    path("domains/<int:domain_id>/dns/", dns.domain_dns, name="domain_dns"),
    path("domains/<int:domain_id>/dns/check/", dns.domain_dns_check, name="domain_dns_check"),
    path("domains/<int:domain_id>/dns/zone/", dns.domain_dns_zone, name="domain_dns_zone"),
    path("diagnostics/", diagnostics.diagnostics, name="diagnostics"),
    path("diagnostics/run/", diagnostics.diagnostics_run, name="diagnostics_run"),
    path("diagnostics/jobs/<int:job_id>/", diagnostics.diagnostics_job, name="diagnostics_job"),
]
