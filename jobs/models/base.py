"""What several rooms of the jobs models share: the slug rule of app and job names,
and the highest attempt number a run can have."""

from __future__ import annotations

from django.core.validators import RegexValidator

# Execution.attempt is a small integer: the highest attempt number a run can have.
MAX_ATTEMPT = 32767

slug_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z",
    "Use letters, digits, '.', '_' or '-', starting with a letter or digit.",
)
