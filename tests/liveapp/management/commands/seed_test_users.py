from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand

PASSWORD = "test-pass-123"


class Command(BaseCommand):
    help = "Users for the live tests: plain, editor, staff, subscriber, inactive."

    def handle(self, **options):
        User = get_user_model()
        editor = Group.objects.get_or_create(name="editor")[0]
        for name in ("plain", "editor", "staff", "subscriber", "inactive", "owner2"):
            user = User.objects.create_user(name, email=f"{name}@example.com", password=PASSWORD)
            if name == "editor":
                user.groups.add(editor)
            if name == "staff":
                user.is_staff = True
            if name == "subscriber":
                user.first_name = "subscriber"
            if name == "inactive":
                user.is_active = False
            user.save()
            self.stdout.write(f"{name}={user.pk}")
