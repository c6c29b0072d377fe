"""ServerSettings.load_public: the settings row without its secrets (one
statement written once per process), what every customer's page reads."""

import pytest

from mailadmin.models import ServerSettings

pytestmark = pytest.mark.django_db


def test_public_settings_hold_every_value_but_not_the_secrets(django_assert_num_queries):
    stored = ServerSettings.load()
    stored.hostname = "mail.example.net"
    stored.ipv4 = "192.0.2.25"
    stored.dqs_key = "a-secret-dqs-key"
    stored.panel_smtp_password = "p^ss"
    stored.save()
    with django_assert_num_queries(1):
        public = ServerSettings.load_public()
    assert public.get_deferred_fields() == set(ServerSettings.SECRET_FIELDS)
    for field in ServerSettings._meta.concrete_fields:
        if field.name not in ServerSettings.SECRET_FIELDS:
            assert getattr(public, field.attname) == getattr(stored, field.attname), field.name
    assert not any(name in public.__dict__ for name in ServerSettings.SECRET_FIELDS)  # not decrypted
    with django_assert_num_queries(1):  # read on demand, as with defer()
        assert public.dqs_key == "a-secret-dqs-key"


def test_public_settings_create_the_row_on_a_fresh_install():
    assert not ServerSettings.objects.exists()
    assert ServerSettings.load_public().pk == 1 and ServerSettings.objects.count() == 1
