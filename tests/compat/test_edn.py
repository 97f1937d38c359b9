"""compat/edn.py: EDN in and out, and its JSON twin."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compat import edn
from compat.edn import Keyword

UID = uuid.UUID("5424c784-a145-4d3e-96f3-b9d99858611a")
WHEN = datetime(2015, 4, 13, 9, 0, tzinfo=UTC)


def test_it_writes_string_keys_as_keywords_and_tags_instants_and_uuids() -> None:
    text = edn.dumps(
        {
            "job/name": "MyShell",
            "job/stats": {"total": 49, "average": Fraction(2660, 39)},
            "job-execution/start-time": WHEN,
            "agent/instance-id": UID,
            "job-execution/batch-status": {"db/ident": Keyword("batch-status/queued")},
            "agent/executions": [],
            "schedule/active?": True,
            "nothing": None,
        }
    )
    assert ':job/name "MyShell"' in text
    assert ":job/stats {:total 49 :average 2660/39}" in text
    assert '#inst "2015-04-13T09:00:00' in text
    assert f'#uuid "{UID}"' in text
    assert ":db/ident :batch-status/queued" in text
    assert ":agent/executions []" in text
    assert ":schedule/active? true" in text and ":nothing nil" in text


def test_it_reads_what_it_writes() -> None:
    data = {
        "job/name": "x",
        "n": [1, 2.5, "s", None, False],
        "t": WHEN,
        "u": UID,
        "r": Fraction(1, 3),
    }
    assert edn.loads(edn.dumps(data)) == data


def test_it_reads_the_seed_payloads_into_plain_python() -> None:
    text = """{:id "JOB-1" :steps [{:id "STEP-1" :batchlet {:ref "example.Batchlet"}}]
               :tags #{:a} :list (1 2) :k :batch-status/queued}"""
    assert edn.loads(text) == {
        "id": "JOB-1",
        "steps": [{"id": "STEP-1", "batchlet": {"ref": "example.Batchlet"}}],
        "tags": ["a"],
        "list": [1, 2],
        "k": "batch-status/queued",
    }
    assert edn.loads(b"") is None


@pytest.mark.parametrize(
    "text", ["{:a", "{:a 1 :b}", ")", '"open', "#foo 1", b"\xff\xfe"]
)
def test_it_raises_edn_error_on_bad_text(text: str | bytes) -> None:
    with pytest.raises(edn.EdnError):
        edn.loads(text)


def test_it_renders_json_as_liberator_does() -> None:
    text = edn.to_json(
        {
            "job/name": "x",
            "s": {"db/ident": Keyword("batch-status/completed")},
            "t": WHEN,
            "u": UID,
            "r": Fraction(1, 4),
        }
    )
    assert json.loads(text) == {
        "job/name": "x",
        "s": {"db/ident": "batch-status/completed"},
        "t": "2015-04-13T09:00:00.000Z",
        "u": str(UID),
        "r": 0.25,
    }


def test_it_makes_read_data_storable_as_json() -> None:
    stored = edn.plain_json(
        edn.loads(f'{{:t #inst "2015-04-13T09:00:00Z" :u #uuid "{UID}"}}')
    )
    assert json.loads(json.dumps(stored)) == {
        "t": "2015-04-13T09:00:00.000Z",
        "u": str(UID),
    }


def test_it_stores_decimals_exactly_when_whole_and_refuses_what_json_cannot_hold() -> (
    None
):
    data = edn.loads("{:a 1.5M :b 2.0M :c 4/2 :d 1/4 :e 1e-400M}")
    assert edn.unstorable(data) is None
    stored = edn.plain_json(data)
    assert stored == {"a": 1.5, "b": 2, "c": 2, "d": 0.25, "e": 0.0}
    assert isinstance(stored["b"], int) and isinstance(stored["c"], int)
    for text in ("[##Inf]", "{:a ##NaN}", "#{##-Inf}", "1e5000M", f"{'9' * 400}/7"):
        value = edn.loads(text)
        assert edn.unstorable(value)
        with pytest.raises(edn.EdnError):
            edn.plain_json(value)
    with pytest.raises(edn.EdnError, match="zero denominator"):
        edn.loads("1/0")


def test_it_refuses_nesting_deeper_than_its_bound_without_recursing() -> None:
    assert edn.loads("[" * 64 + "1" + "]" * 64)
    for text in ("[" * 65 + "]" * 65, "{:a " * 20000 + "1" + "}" * 20000):
        with pytest.raises(edn.EdnError, match="nested deeper than 64"):
            edn.loads(text)
    deep: list[object] = []
    for _ in range(5000):
        deep = [deep]
    assert edn.unstorable({"x": deep}) == "nested deeper than 64 levels."
    with pytest.raises(edn.EdnError):
        edn.plain_json(deep)


def test_it_writes_a_key_as_a_keyword_only_where_edn_has_one() -> None:
    keywords = ["job/name", "schedule/active?", "a.b/c-d", "-a", "+", "_x", "név", "a#"]
    strings = ["my key", "2nd", "", "a/b/c", "/", "x/", "/x", ":x", "a:b", "-1", ".5"]
    text = edn.dumps({key: 1 for key in keywords + strings})
    for key in keywords:
        assert f":{key} 1" in text
    for key in strings:
        assert f"{json.dumps(key)} 1" in text
    assert edn.loads(text) == {key: 1 for key in keywords + strings}


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=12), st.integers(), max_size=6))
def test_it_reads_back_any_string_key(value: dict[str, int]) -> None:
    assert edn.loads(edn.dumps(value)) == value


def test_it_joins_surrogate_pair_escapes_as_clojure_does() -> None:
    text = '{"\\ud83d\\ude00" "a\\ud83d\\ude00b" :lone "\\ud800"}'
    assert edn.loads(text) == {"\U0001f600": "a\U0001f600b", "lone": "\ud800"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_it_only_ever_raises_edn_error_on_garbage(data: bytes) -> None:
    with contextlib.suppress(edn.EdnError):
        edn.loads(data)


KEYS = st.from_regex(r"[a-z]{1,8}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.from_regex(r"[a-z]{1,8}", fullmatch=True), inner, max_size=4
            )
        ),
        max_leaves=20,
    )
)
def test_it_reads_back_any_nested_value_it_writes(value: object) -> None:
    assert edn.loads(edn.dumps(value)) == value


def test_it_keeps_keyword_values_when_asked_and_makes_them_plain_again() -> None:
    text = "{:k :batch-status/queued :v [:a {:b :c}] :s #{:x}}"
    typed = edn.loads(text, keywords=True)
    assert typed["k"] == Keyword("batch-status/queued")
    assert typed["v"] == [Keyword("a"), {"b": Keyword("c")}]
    assert edn.plain(typed) == edn.loads(text)


def test_it_types_stored_keywords_instants_and_uuids_again() -> None:
    typed = edn.loads(
        f'{{:k :a/b :t #inst "2015-04-13T09:00:00.5Z" :u #uuid "{UID}" '
        ':l [1 :x {:y #inst "2016"}] :s ":k" :n 2}',
        keywords=True,
    )
    found = edn.tags(typed)
    assert found == [
        [["k"], "keyword"],
        [["t"], "inst"],
        [["u"], "uuid"],
        [["l", 1], "keyword"],
        [["l", 2, "y"], "inst"],
    ]
    stored = json.loads(json.dumps(edn.plain_json(typed)))
    retyped = edn.retag(stored, json.loads(json.dumps(found)))
    assert retyped == {
        "k": Keyword("a/b"),
        "t": datetime(2015, 4, 13, 9, 0, 0, 500000, tzinfo=UTC),
        "u": UID,
        "l": [1, Keyword("x"), {"y": datetime(2016, 1, 1, tzinfo=UTC)}],
        "s": ":k",
        "n": 2,
    }
    assert stored["k"] == "a/b"  # a copy: the stored data stay plain
    assert edn.dumps(retyped) == edn.dumps(typed)


def test_it_passes_over_tags_whose_place_changed() -> None:
    stored = {"k": "two words", "t": "yesterday", "u": "X", "l": [], "m": {"a": 1}}
    found = [
        [["k"], "keyword"],
        [["t"], "inst"],
        [["u"], "uuid"],
        [["l", 0], "keyword"],
        [["m", "a"], "keyword"],
        [["m", "a", "b"], "keyword"],
        [["gone"], "keyword"],
        [[], "keyword"],
        "junk",
        [["k"], "symbol"],
    ]
    assert edn.retag(stored, found) == stored
    assert edn.retag(stored, "junk") is stored


def test_it_keeps_sets_as_sets_through_storage_when_asked() -> None:
    text = '{:tags #{:a "b"} :nested [#{#{1}} #{}] :maps #{{:k #inst "2016"}}}'
    typed = edn.loads(text, keywords=True)
    assert isinstance(typed["tags"], edn.EdnSet)
    assert sorted(map(str, typed["tags"])) == [":a", "b"]
    # Without `keywords`, and made plain, a set is a list, as before.
    assert not isinstance(edn.loads(text)["tags"], edn.EdnSet)
    assert not isinstance(edn.plain(typed)["tags"], edn.EdnSet)
    found = edn.tags(typed)
    assert [["tags"], "set"] in found and [["nested", 0, 0], "set"] in found
    stored = json.loads(json.dumps(edn.plain_json(typed)))
    assert stored["nested"] == [[[1]], []] and stored["maps"] == [
        {"k": "2016-01-01T00:00:00.000Z"}
    ]
    retyped = edn.retag(stored, json.loads(json.dumps(found)))
    written = edn.dumps(retyped)
    assert ":nested [#{#{1}} #{}]" in written
    assert ':maps #{{:k #inst "2016-01-01T00:00:00' in written
    again = edn.loads(written, keywords=True)
    assert set(again["tags"]) == {Keyword("a"), "b"}
    assert isinstance(again["nested"][0][0], edn.EdnSet)
    # JSON has no sets: arrays, as liberator renders a Clojure set.
    assert json.loads(edn.to_json(retyped))["nested"] == [[[1]], []]


def test_it_writes_a_set_without_repeating_an_item() -> None:
    # Data edited since it was stored may repeat one; Clojure refuses #{1 1}.
    assert edn.dumps({"s": edn.EdnSet([1, 1, "a", "a"])}) == '{:s #{1 "a"}}'


def test_it_passes_over_a_set_tag_whose_place_holds_no_list() -> None:
    stored = {"s": "x", "l": [1]}
    found = [[["s"], "set"], [["gone"], "set"], [["l", 0], "set"]]
    assert edn.retag(stored, found) == stored
    assert not isinstance(edn.retag(stored, found)["l"], edn.EdnSet)
