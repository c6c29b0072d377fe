"""URLs of the Sending pages (views/sending.py): the mail queue, held
senders, “where is my mail?”, sending limits. Included by urls.py into the
mailadmin namespace."""

from django.urls import path, register_converter

from .services.mail_queue import MESSAGE_ID_RE
from .views import sending


class EximMessageId:
    """An Exim message id (4.96 or 4.97+); anything else is no URL here."""

    regex = MESSAGE_ID_RE.pattern

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        if not MESSAGE_ID_RE.fullmatch(value):
            raise ValueError(value)
        return value


register_converter(EximMessageId, "exim_id")

urlpatterns = [
    path("queue/", sending.queue_list, name="queue_list"),
    path("queue/<exim_id:message_id>/", sending.queue_message, name="queue_message"),
    path("held/", sending.held_list, name="held_list"),
    path("held/<int:hold_id>/", sending.hold_detail, name="hold_detail"),
    path("mail-log/", sending.mail_log_search, name="mail_log"),
    path("settings/server/sending-limits/", sending.limits_server, name="limits_server"),
    path("domains/<int:domain_id>/sending-limits/", sending.limits_domain, name="limits_domain"),
]
