"""The demo project's settings exactly as shipped (login throttles, caps, origins), with a fast hasher."""

from project.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # the logins, not the hashing, are tested
