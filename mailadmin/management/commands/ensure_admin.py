"""Create the first admin if there is none, and print its login once."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create an admin user with a random password if no admin exists."

    def handle(self, *args, **options):
        User = get_user_model()
        if User.objects.filter(is_staff=True).exists():
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_user("admin", password=password, is_staff=True, is_superuser=True)
        # Printed once to the terminal that ran `make run`; it is stored only as a hash.
        self.stdout.write(
            f"\nCreated the first admin.\n  URL:      http://127.0.0.1:8000/\n"
            f"  User:     admin\n  Password: {password}\n(shown once; change it after logging in)\n"
        )
