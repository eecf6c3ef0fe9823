"""Create the demo users (idempotent) and print their credentials."""

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

DEMO_USERS = [
    # username, password, staff/superuser, roles
    ("admin", "admin-pass-123", True, []),
    ("editor", "editor-pass-123", False, ["editor"]),
    ("alice", "alice-pass-123", False, []),
]


class Command(BaseCommand):
    help = "Create an admin, a user in the 'editor' role and a plain user, and print their credentials."

    def handle(self, **options):
        User = get_user_model()
        for username, password, admin, roles in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            if created:
                user.set_password(password)
                user.is_staff = user.is_superuser = admin
                user.email = f"{username}@example.com"
                user.save()
            for role in roles:
                user.groups.add(Group.objects.get_or_create(name=role)[0])
            self.stdout.write(f"  {username:<8} password: {password:<16} roles: {', '.join(roles) or '-'}"
                              f"{'  (admin)' if admin else ''}")
