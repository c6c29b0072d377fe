"""A default that stops a stolen mailbox: the server's sending limits are 200
messages an hour and 1,000 a day per sender (HestiaCP ships 200 an hour),
past which mail is held, not lost (services/holds.py). Only where the server
has no limits row yet: an admin's own choice, a blank one included, stays.
The row is the admin's like any other: the limits page and `mail limit show`
show it, `mail limit set --default` changes it (0 = no limit)."""

from django.db import migrations

DEFAULT_PER_HOUR = 200
DEFAULT_PER_DAY = 1000


def add_default(apps, schema_editor):
    SendLimit = apps.get_model("mailadmin", "SendLimit")
    if not SendLimit.objects.filter(domain__isnull=True, account__isnull=True).exists():
        SendLimit.objects.create(per_hour=DEFAULT_PER_HOUR, per_day=DEFAULT_PER_DAY)


class Migration(migrations.Migration):

    dependencies = [
        ("mailadmin", "0016_log_search_job"),
    ]

    operations = [
        migrations.RunPython(add_default, migrations.RunPython.noop),
    ]
