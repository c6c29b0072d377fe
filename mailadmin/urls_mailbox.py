"""URLs of mailbox self-service (views/mailbox.py) and of the per-mailbox
Apple profile its domain's owner downloads (views/autoconfig.py). Included by
urls.py into the mailadmin namespace. The self-service URLs carry no mailbox:
it comes from the session."""

from django.urls import path

from .views import autoconfig, mailbox

urlpatterns = [
    path("mailbox/", mailbox.mailbox_home, name="mailbox_home"),
    path("mailbox/password/", mailbox.mailbox_password, name="mailbox_password"),
    path("mailbox/vacation/", mailbox.mailbox_vacation, name="mailbox_vacation"),
    path("mailbox/forwards/", mailbox.mailbox_forward_add, name="mailbox_forward_add"),
    path("mailbox/forwards/<int:forward_id>/delete/", mailbox.mailbox_forward_delete, name="mailbox_forward_delete"),
    path("mailbox/forwards/keep-copy/", mailbox.mailbox_keep_copy, name="mailbox_keep_copy"),
    path("mailbox/mobileconfig/", mailbox.mailbox_mobileconfig, name="mailbox_mobileconfig"),
    path("mailbox/logout/", mailbox.mailbox_logout, name="mailbox_logout"),
    path(
        "domains/<int:domain_id>/accounts/<int:account_id>/mobileconfig/",
        autoconfig.account_mobileconfig,
        name="account_mobileconfig",
    ),
]
