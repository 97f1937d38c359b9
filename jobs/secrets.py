"""Job secrets: apart from the spec, encrypted at rest, merged in by the worker.

Each secret is a JobSecret row whose value is a Fernet token (AES-128-CBC with an
HMAC-SHA256) under KARMCHARI_SECRETS_KEYS: the first key encrypts, every key decrypts,
so keys rotate by putting a new one first, running `manage.py rotate_secrets`, then
removing the old one. A key derived from SECRET_KEY (HKDF) encrypts when no keys are
set, so a fresh checkout works with no setup, and always decrypts.

Values go one way. The API, the admin and jobfiles show names and SECRET_MASK; only
the worker that runs a job decrypts them (job_secrets_reveal), and it masks them in
whatever the run prints (OutputMasker, mask_text).

Notification channels' webhook signing keys (NotificationChannel.secret) are stored
the same way, under the same keys (rotated with them); only the sender decrypts one
(channel_signing_key), and the API and the admin say whether one is set, no more.

Secret-looking values still sent inside a spec (old clients, compat APIs, jobfiles)
are moved out of it by spec_split_secrets, the rule migration 0013 applied to the
specs stored before.
"""

from __future__ import annotations

import base64
import functools
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from requests.utils import requote_uri

from jobs.models import Job, JobSecret, NotificationChannel
from jobs.runners import ENV_NAME, SECRET_MASK
from jobs.runners.http import has_placeholder

MAX_NAME_LENGTH = 255
MAX_VALUE_BYTES = 65536
# Shorter values are not masked in output: masking "1" would garble every number.
MASK_MIN_LENGTH = 4
OUTPUT_MASK = "***"


class SecretError(ValueError):
    """Secrets that cannot be stored or read: maps each secret's name to why."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


# --- Encryption ----------------------------------------------------------------------


def _derived_key(secret_key: str) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"karmchari job secrets"
    )
    return base64.urlsafe_b64encode(hkdf.derive(secret_key.encode()))


@functools.lru_cache(maxsize=4)
def _fernet(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    # The derived key always decrypts (last): moving off the default is then "set
    # the keys, restart, rotate_secrets", with no moment when runs cannot read theirs.
    raw = [key.encode() for key in keys] + [_derived_key(secret_key)]
    return MultiFernet([Fernet(key) for key in raw])


def _keys() -> MultiFernet:
    # Keyed by the settings' values, so override_settings in tests is honoured.
    return _fernet(tuple(settings.KARMCHARI_SECRETS_KEYS), settings.SECRET_KEY)


def encrypt(value: str) -> str:
    """A Fernet token of `value` under the first key. Needs no models: migrations
    use it."""
    return _keys().encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    """The value; cryptography's InvalidToken when no configured key made it."""
    return _keys().decrypt(token.encode()).decode()


def secret_matches(token: str, value: str) -> bool:
    """Whether `token` holds `value` (False when it cannot be decrypted): lets a
    jobfile that sets the stored value apply as "no changes"."""
    try:
        return hmac.compare_digest(decrypt(token).encode(), value.encode())
    except InvalidToken:
        return False


# --- Rules (no database) -------------------------------------------------------------


def is_secret_name(name: str) -> bool:
    """An env variable or header whose value is a secret, by its name."""
    return bool(re.search(settings.KARMCHARI_SECRET_ENV_PATTERN, name))


def header_secret_name(header: str) -> str:
    """The secret behind a header: X-Api-Key keeps its value in X_API_KEY."""
    name = re.sub(r"[^A-Za-z0-9]", "_", header).upper()
    return f"_{name}" if name[:1].isdigit() else name


def clean_secrets(values: Any) -> dict[str, str | None]:
    """A {NAME: value} map as sent, checked: SecretError names each bad entry.
    A value of None deletes the secret; SECRET_MASK keeps the stored value."""
    if not isinstance(values, dict):
        raise SecretError({"secrets": "Must be an object of NAME: value strings."})
    errors: dict[str, str] = {}
    for name, value in values.items():
        if (
            not isinstance(name, str)
            or not ENV_NAME.match(name)
            or len(name) > MAX_NAME_LENGTH
        ):
            errors[str(name)] = (
                "Not a valid name: letters, digits and '_', not starting with a "
                f"digit, at most {MAX_NAME_LENGTH} characters."
            )
        elif value is None:
            continue
        elif not isinstance(value, str):
            errors[name] = "Must be a string, or null to delete the secret."
        elif "\x00" in value:
            errors[name] = "Must not contain a NUL byte."
        elif len(value.encode()) > MAX_VALUE_BYTES:
            errors[name] = f"Longer than {MAX_VALUE_BYTES} bytes."
    if errors:
        raise SecretError(errors)
    return dict(values)


def spec_split_secrets(
    *, kind: str, spec: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The spec without its secret-looking values, and those values by secret name.

    Shell: `env` entries whose name matches KARMCHARI_SECRET_ENV_PATTERN leave `env`.
    HTTP: a matching header's value goes to a secret named after the header and the
    header says `${X_API_KEY}` instead; a value that already uses a placeholder stays.
    A value may be SECRET_MASK (a client sending back what it read): it keeps the
    stored secret. Needs no models: migration 0013 uses it.
    """
    secrets: dict[str, str] = {}
    if kind == Job.Kind.SHELL and isinstance(spec.get("env"), dict):
        env: dict[str, Any] = {}
        for name, value in spec["env"].items():
            if isinstance(value, str) and is_secret_name(name):
                secrets[name] = value
            else:
                env[name] = value
        if secrets:
            spec = {key: value for key, value in spec.items() if key != "env"}
            if env:
                spec["env"] = env
    elif kind == Job.Kind.HTTP and isinstance(spec.get("headers"), dict):
        headers: dict[str, Any] = {}
        for header, value in spec["headers"].items():
            if (
                isinstance(value, str)
                and is_secret_name(header)
                and not has_placeholder(value)
            ):
                name = header_secret_name(header)
                secrets[name] = value
                value = f"${{{name}}}"
            headers[header] = value
        if secrets:
            spec = {**spec, "headers": headers}
    return spec, secrets


def mask_forms(values: Iterable[str]) -> list[str]:
    """What to mask for these secret values (those of MASK_MIN_LENGTH or more): each
    value as it is and as an HTTP client percent-encodes it into a URL (a value in an
    http job's URL shows up so in its errors), longest first, so a value inside a
    longer one does not leave the rest visible."""
    forms = set()
    for value in values:
        if len(value) >= MASK_MIN_LENGTH:
            forms |= {
                value,
                quote(value, safe=""),
                quote(value),
                quote_plus(value),
                requote_uri(value),
            }
    return sorted(forms, key=len, reverse=True)


def mask_text(text: str, values: Iterable[str]) -> str:
    """`text` with every secret value (of MASK_MIN_LENGTH or more) replaced, in
    any of its forms (mask_forms)."""
    wanted = mask_forms(values)
    if not text or not wanted:
        return text
    pattern = "|".join(re.escape(value) for value in wanted)
    return re.sub(pattern, OUTPUT_MASK, text)


class OutputMasker:
    """Masks secret values in output that arrives in chunks, then hands it on.

    A value split across two chunks is masked too: the end of a chunk that could be
    the start of a value is held back until the next chunk (or flush) settles it. So
    output shows up late only while it looks like the start of a secret.
    """

    def __init__(self, values: Iterable[str], sink: Callable[[bytes], None]) -> None:
        self._values = [form.encode() for form in mask_forms(values)]
        self._pattern = (
            re.compile(b"|".join(re.escape(v) for v in self._values))
            if self._values
            else None
        )
        self._sink = sink
        self._held = b""

    def write(self, chunk: bytes) -> None:
        if self._pattern is None:
            self._sink(chunk)
            return
        if not chunk:
            return
        data = self._pattern.sub(OUTPUT_MASK.encode(), self._held + chunk)
        keep = self._partial(data)
        self._held = data[len(data) - keep :] if keep else b""
        if len(data) > keep:
            self._sink(data[: len(data) - keep])

    def flush(self) -> None:
        if self._held:
            self._sink(self._held)
            self._held = b""

    def _partial(self, data: bytes) -> int:
        """How many bytes at the end of `data` are the beginning of some value."""
        longest = 0
        for value in self._values:
            at = data.find(value[:1], max(0, len(data) - len(value) + 1))
            while at != -1 and len(data) - at > longest:
                if value.startswith(data[at:]):
                    longest = len(data) - at
                    break
                at = data.find(value[:1], at + 1)
        return longest


# --- Services ------------------------------------------------------------------------


def job_secrets_set(
    *, job: Job, secrets: Mapping[str, str | None], replace: bool = False
) -> None:
    """Store, change (None deletes, SECRET_MASK keeps) and, with `replace`, delete
    the secrets not named. SecretError, before any write, for bad names or values,
    and for a mask where no value is stored to keep."""
    wanted = clean_secrets(dict(secrets))
    stored = dict(job.secrets.values_list("name", "pk"))
    unknown = sorted(
        name
        for name, value in wanted.items()
        if value == SECRET_MASK and name not in stored
    )
    if unknown:
        raise SecretError(
            {
                name: f"Holds the mask {SECRET_MASK!r} but no value is stored to "
                "keep: send the real value."
                for name in unknown
            }
        )
    doomed = [name for name, value in wanted.items() if value is None]
    if replace:
        doomed += [name for name in stored if name not in wanted]
    now = timezone.now()
    with transaction.atomic():
        if doomed:
            JobSecret.objects.filter(job=job, name__in=doomed).delete()
        new: list[JobSecret] = []
        for name, value in wanted.items():
            if value is None or value == SECRET_MASK:
                continue
            if name in stored:
                JobSecret.objects.filter(pk=stored[name]).update(
                    value=encrypt(value), updated=now
                )
            else:
                new.append(JobSecret(job=job, name=name, value=encrypt(value)))
        JobSecret.objects.bulk_create(new)


def job_secrets_reveal(*, job_id: int) -> dict[str, str]:
    """The job's secrets in the clear: for the worker about to run it, nobody else.
    One query. SecretError names those no configured key can decrypt."""
    values: dict[str, str] = {}
    unreadable: dict[str, str] = {}
    for name, token in JobSecret.objects.filter(job_id=job_id).values_list(
        "name", "value"
    ):
        try:
            values[name] = decrypt(token)
        except InvalidToken:
            unreadable[name] = (
                "cannot be decrypted with KARMCHARI_SECRETS_KEYS (was its key "
                "removed, or SECRET_KEY changed while no keys were set?)"
            )
    if unreadable:
        raise SecretError(unreadable)
    return values


def secrets_rotate(*, batch: int = 500) -> tuple[int, list[str]]:
    """Encrypt every stored secret again under the first key, so older keys can be
    removed: job secrets and notification channels' signing keys. Answers how many
    were rotated and those no key could decrypt ("app/job: NAME", "notification
    channel NAME"), which are left as they are."""
    keys = _keys()
    rotated = 0
    unreadable: list[str] = []
    rows = JobSecret.objects.select_related("job__app").only(
        "pk", "name", "value", "job__name", "job__app__name"
    )
    # Batches by primary key, not one cursor over the table being written (SQLite
    # would not isolate the two).
    pks = list(JobSecret.objects.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(pks), batch):
        for secret in rows.filter(pk__in=pks[start : start + batch]):
            try:
                token = keys.rotate(secret.value.encode()).decode()
            except InvalidToken:
                job = secret.job
                unreadable.append(f"{job.app.name}/{job.name}: {secret.name}")
                continue
            # Only the value, and only the one read: an operator may rename or
            # delete the row meanwhile, or set a new value (already under the
            # first key), which this must not overwrite with the old one.
            rotated += JobSecret.objects.filter(
                pk=secret.pk, value=secret.value
            ).update(value=token)
    channels = NotificationChannel.objects.exclude(secret="")
    pks = list(channels.order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(pks), batch):
        for pk, name, old in channels.filter(
            pk__in=pks[start : start + batch]
        ).values_list("pk", "name", "secret"):
            try:
                token = keys.rotate(old.encode()).decode()
            except InvalidToken:
                unreadable.append(f"notification channel {name}")
                continue
            rotated += NotificationChannel.objects.filter(pk=pk, secret=old).update(
                secret=token
            )
    return rotated, unreadable


def channel_signing_key(*, channel: NotificationChannel) -> str:
    """The channel's webhook signing key in the clear ("" when it has none): for
    the sender, nobody else. SecretError when no configured key can decrypt it."""
    if not channel.secret:
        return ""
    try:
        return decrypt(channel.secret)
    except InvalidToken:
        raise SecretError(
            {
                "secret": f"The secret of notification channel {channel.name!r} "
                "cannot be decrypted with KARMCHARI_SECRETS_KEYS (was its key "
                "removed, or SECRET_KEY changed while no keys were set?): set it "
                "again."
            }
        ) from None
