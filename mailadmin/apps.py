from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class MailadminConfig(AppConfig):
    name = "mailadmin"
    verbose_name = _("Mail administration")
    default_auto_field = "django.db.models.BigAutoField"
