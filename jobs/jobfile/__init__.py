"""Jobs as code: export apps, jobs and schedules to YAML, and apply a file back.

The file is the whole truth for every job it lists: a field it leaves out takes the
model's default (`null` too, for a field that may be empty but not null, such as a
description), and a job's `schedules` list replaces the job's schedules (matched by
kind, expression and time zone, so editing `enabled` or `epsilon` keeps the row and its
history; the same three twice, which the API allows, match in order). Keys are text,
as in JSON: a YAML `on:`, `no:`, `null:` or `1:` key is a problem (quote it). `prune`
also deletes the jobs of the file's apps that the file no longer lists, and with them
(Kala's rule) any job, of any app, left with no parent; the plan lists each. Apps are
never deleted, nor a job the file lists: a parent the prune would delete is a problem.

Applying compares the file with an export of the database in the same terms, so a file
that was just exported applies as "no changes". A job's `secrets` are exported as their
names with the mask, never a value. In a file, the mask keeps the stored value, a real
value sets it, and a stored secret the file leaves out is deleted (the file is the
whole truth). Secret-looking values inside a spec (KARMCHARI_SECRET_ENV_PATTERN) move
to the secrets, as they do through the API.

Every write goes through jobs.services, in one transaction.

The package: `reading` (the fields, and YAML read with places), `export`, `validate`
(a document into the desired state) and `plan` (against the database, and applying).
"""

from jobs.jobfile.export import jobfile_export
from jobs.jobfile.plan import Change, Plan, jobfile_apply, jobfile_plan
from jobs.jobfile.reading import FORMAT_VERSION, JobfileError, jobfile_load

__all__ = [
    "FORMAT_VERSION",
    "Change",
    "JobfileError",
    "Plan",
    "jobfile_apply",
    "jobfile_export",
    "jobfile_load",
    "jobfile_plan",
]
