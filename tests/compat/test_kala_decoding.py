"""compat/kala/decoding.py: a POSTed Kala job, read as Go's json.Unmarshal reads it
into Kala's Job struct."""

from __future__ import annotations

import json

import pytest

from compat.kala.decoding import MAX_BODY, decode
from compat.kala.protocol import KalaError

JOB = '{"name": "n", "command": "true", %s}'
HUGE = "9" * 5000  # more digits than Python's int() reads (4300)


def refusal(body: str | bytes) -> str:
    with pytest.raises(KalaError) as raised:
        decode(body.encode() if isinstance(body, str) else body)
    return str(raised.value)


@pytest.mark.parametrize(
    "value",
    [
        "1e400",
        "-1e400",
        "1E+400",
        "0.1e-400",
        HUGE,
        "-" + HUGE,
        HUGE + ".5e999999999",
        "-0",
        "18446744073709551616",
        '"\\u0000"',
        '"\\ud800"',
        '{"deep": [[[{"n": 1e400}]]]}',
        "[" * 5000 + "1e400" + "]" * 5000,
    ],
)
def test_it_skips_whatever_valid_json_a_key_kala_ignores_holds(value: str) -> None:
    """Go skips unknown keys once they are valid JSON: a number no float or int
    holds, a NUL, a lone surrogate, nesting past Python's recursion limit."""
    fields = decode((JOB % f'"unknown": {value}, "Other": [{value}]').encode())
    assert fields == {"name": "n", "command": "true"}


@pytest.mark.parametrize(
    ("member", "error"),
    [
        (
            '"retries": 1e400',
            "json: cannot unmarshal number 1e400 into Go struct field Job.retries "
            "of type uint",
        ),
        (
            f'"retries": {HUGE}',
            f"json: cannot unmarshal number {HUGE} into Go struct field Job.retries "
            "of type uint",
        ),
        (
            '"RETRIES": 18446744073709551616',
            "json: cannot unmarshal number 18446744073709551616 into Go struct field "
            "Job.retries of type uint",
        ),
        (
            '"retries": -0',
            "json: cannot unmarshal number -0 into Go struct field Job.retries of "
            "type uint",
        ),
        (
            '"retries": 4e4',
            "json: cannot unmarshal number 4e4 into Go struct field Job.retries of "
            "type uint",
        ),
        (
            '"retries": "2"',
            "json: cannot unmarshal string into Go struct field Job.retries of type "
            "uint",
        ),
        (
            '"name": 1e400',
            "json: cannot unmarshal number into Go struct field Job.name of type "
            "string",
        ),
        (
            '"metadata": {"success_count": 1.5e400}',
            "json: cannot unmarshal number 1.5e400 into Go struct field "
            "Metadata.metadata.success_count of type uint",
        ),
        (
            '"stats": [null, {"execution_duration": 9223372036854775808}]',
            "json: cannot unmarshal number 9223372036854775808 into Go struct field "
            "JobStat.stats.execution_duration of type time.Duration",
        ),
        (
            '"stats": [{"execution_duration": 1e400}]',
            "json: cannot unmarshal number 1e400 into Go struct field "
            "JobStat.stats.execution_duration of type time.Duration",
        ),
        (
            '"stats": [5]',
            "json: cannot unmarshal number into Go struct field Job.stats of type "
            "job.JobStat",
        ),
        (
            '"stats": {}',
            "json: cannot unmarshal object into Go struct field Job.stats of type "
            "[]*job.JobStat",
        ),
        (
            '"metadata": []',
            "json: cannot unmarshal array into Go struct field Job.metadata of type "
            "job.Metadata",
        ),
        (
            '"parent_jobs": [1]',
            "json: cannot unmarshal number into Go struct field Job.parent_jobs of "
            "type string",
        ),
        (
            '"dependent_jobs": "x"',
            "json: cannot unmarshal string into Go struct field Job.dependent_jobs "
            "of type []string",
        ),
        (
            '"disabled": 0',
            "json: cannot unmarshal number into Go struct field Job.disabled of type "
            "bool",
        ),
        # A repeated key is decoded each time: the bad first one is an error too.
        (
            '"retries": "x", "retries": 2',
            "json: cannot unmarshal string into Go struct field Job.retries of type "
            "uint",
        ),
    ],
)
def test_it_refuses_numbers_and_types_a_field_cannot_hold_as_go_does(
    member: str, error: str
) -> None:
    assert refusal(JOB % member) == error


def test_it_keeps_go_integers_exactly() -> None:
    fields = decode(
        (
            JOB % '"retries": 18446744073709551615, "stats": [{"execution_duration": '
            '-9223372036854775808, "number_of_retries": 0}, {"execution_duration": '
            "-0}]"
        ).encode()
    )
    assert fields["retries"] == 2**64 - 1


def test_it_answers_the_first_type_error_but_a_bad_time_at_once() -> None:
    """Go saves the first type error and decodes on; time.Time's UnmarshalJSON
    error ends decoding, and is the one answered."""
    assert "Job.retries" in refusal(JOB % '"retries": -1, "owner": 5')
    assert refusal(JOB % '"retries": -1, "next_run_at": 5') == (
        "Time.UnmarshalJSON: input is not a JSON string"
    )
    assert refusal(JOB % '"metadata": {"last_error": "yesterday"}').startswith(
        'parsing time "yesterday"'
    )


def test_it_matches_keys_as_go_folds_them_and_null_leaves_a_field() -> None:
    fields = decode(
        b'{"NAME": "a", "name": null, "Command": "c", "\xc5\xbfchedule": "s", '
        b'"parent_jobs": ["p", null], "parent_jobs2": 1e400}'
    )
    # U+017F (long s) folds to "s" in Go; null leaves the name it had; a null in a
    # list of strings is "".
    assert fields == {
        "name": "a",
        "command": "c",
        "schedule": "s",
        "parent_jobs": ["p", ""],
    }


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("", "unexpected end of JSON input"),
        (" \n", "unexpected end of JSON input"),
        ("[]", "json: cannot unmarshal array into Go value of type job.Job"),
        ('"job"', "json: cannot unmarshal string into Go value of type job.Job"),
        ("1e400", "json: cannot unmarshal number into Go value of type job.Job"),
        ("true", "json: cannot unmarshal bool into Go value of type job.Job"),
    ],
)
def test_it_refuses_what_is_no_job_object(body: str, error: str) -> None:
    assert refusal(body) == error


@pytest.mark.parametrize(
    "body",
    [
        JOB % '"x": NaN',
        JOB % '"x": -Infinity',
        JOB % '"x": [1,]',
        JOB % '"x": 01',
        '{"name": "n"} x',
        # Deeper than Go's 10000 levels, the whole body counted.
        '{"x": ' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"x": ' + "[" * 5000 + "]" * 4999 + "}",
        '{"x": ' + "[" * 5000 + "1,]" + "]" * 4999 + "}",
    ],
)
def test_it_refuses_what_go_cannot_read_as_json(body: str) -> None:
    assert refusal(body).startswith("invalid JSON: ")


def test_it_reads_nesting_up_to_go_bound() -> None:
    # 10000 levels: the body, 9996 arrays, an object, a list and the {} in it.
    deep = "[" * 9_996 + '{"a": [1.5, "s", true, null, {}]}' + "]" * 9_996
    assert decode(('{"x": ' + deep + ', "name": "n"}').encode()) == {"name": "n"}


def test_it_refuses_a_nul_only_in_a_field_it_stores() -> None:
    assert decode((JOB % '"id": "a\\u0000b", "x": "\\u0000"').encode())["id"] == (
        "a\x00b"
    )
    assert refusal(JOB % '"owner": "a\\u0000"') == (
        "json: field 'owner': Text must not contain NUL (U+0000) characters."
    )


def test_it_decodes_the_first_mib_as_kala_reads_it() -> None:
    job = json.dumps({"name": "n", "command": "true"}).encode()
    assert decode(job + b" " * MAX_BODY) == {"name": "n", "command": "true"}
    cut = b'{"name": "n", "x": "' + b"a" * MAX_BODY + b'"}'
    assert refusal(cut).endswith("(Kala reads the first 1 MiB of a body)")
