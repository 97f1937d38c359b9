"""python manage.py create_token USERNAME [--name NAME]: a new API token; prints its
key, which is not stored and cannot be shown again."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from jobs import tokens


class Command(BaseCommand):
    help = "Make an API token for a user and print its key (shown only once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="What or who uses it.")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: options["username"]})
        except User.DoesNotExist:
            raise CommandError(f"No user {options['username']!r}.") from None
        _, key = tokens.token_create(user=user, name=options["name"])
        self.stdout.write(key)
