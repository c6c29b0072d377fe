"""Create the first admin if there is none, and print its login once."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email


class Command(BaseCommand):
    help = "Create an admin user with a random password if no admin exists."

    def add_arguments(self, parser):
        parser.add_argument("--email", default="", help="the admin's e-mail address")

    def handle(self, *args, **options):
        email = options["email"].strip()
        if email:
            try:
                validate_email(email)
            except ValidationError:
                raise CommandError(f"--email: not an e-mail address: {email!r}")
        User = get_user_model()
        if User.objects.filter(is_staff=True).exists():
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_user(
            "admin", email=email, password=password, is_staff=True, is_superuser=True
        )
        # Printed once to the terminal that ran `make run` or install.sh; it is
        # stored only as a hash.
        self.stdout.write(
            f"\nCreated the first admin.\n  URL:      {settings.MAILPANEL_BASE_URL}/\n"
            f"  User:     admin\n  Password: {password}\n(shown once; change it after logging in)\n"
        )
