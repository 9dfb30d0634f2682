"""The preview's diff shows every changed input, also inside a secret, and never the secret."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from offline_preview.diff import CHANGED_SECRET, diff_evaluations, parse_dsn
from offline_preview.harness import SECRET_MARKER, Evaluation, RegisteredResource

PASSWORD = "s3cr3t-pa55"


def resource(inputs, secret_paths=()):
    return RegisteredResource(urn="urn:pulumi:prod::bazbii::kubernetes:core/v1:Secret::app-db",
                              type="kubernetes:core/v1:Secret", name="app-db", custom=True, parent="",
                              inputs=inputs, secret_paths=frozenset(secret_paths))


def changes(before, after, secret_paths):
    evaluations = [Evaluation("bazbii", "prod", [resource(i, secret_paths)], {}, []) for i in (before, after)]
    [change] = diff_evaluations(*evaluations) or [None]
    if change is None:
        return {}
    text = json.dumps([c.__dict__ for c in change.changes])
    assert PASSWORD not in text and "other-pass" not in text
    return {c.path: (c.before, c.after) for c in change.changes}


def url(host, password=PASSWORD):
    return f"postgresql://bazbii:{password}@{host}:6432/bazbii"


def test_host_inside_a_secret_url_is_shown():
    got = changes({"stringData": {"DATABASE_URL": url("10.0.0.1")}},
                  {"stringData": {"DATABASE_URL": url("10.0.0.3")}}, [("stringData", "DATABASE_URL")])
    assert got == {"stringData.DATABASE_URL.host": ("10.0.0.1", "10.0.0.3")}


def test_host_inside_a_whole_secret_object_is_shown():
    # e.g. a Secret's stringData marked secret as a whole, holding a libpq DSN
    got = changes({"stringData": {"DSN": f"host=10.0.0.1 port=5432 dbname=bazbii password={PASSWORD}"}},
                  {"stringData": {"DSN": f"host=10.0.0.3 port=5432 dbname=bazbii password={PASSWORD}"}},
                  [("stringData",)])
    assert got == {"stringData.DSN.host": ("10.0.0.1", "10.0.0.3")}


def test_a_changed_password_is_flagged_not_shown():
    got = changes({"stringData": {"DATABASE_URL": url("10.0.0.1")}},
                  {"stringData": {"DATABASE_URL": url("10.0.0.1", "other-pass")}}, [("stringData", "DATABASE_URL")])
    assert got == {"stringData.DATABASE_URL.password": (SECRET_MARKER, CHANGED_SECRET)}


def test_an_opaque_secret_is_flagged_when_it_changes_and_silent_otherwise():
    key_v1, key_v2 = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA", "-----BEGIN OPENSSH PRIVATE KEY-----\nBBBB"
    path = [("connection", "privateKey")]
    assert changes({"connection": {"privateKey": key_v1}}, {"connection": {"privateKey": key_v1}}, path) == {}
    assert changes({"connection": {"privateKey": key_v1}}, {"connection": {"privateKey": key_v2}}, path) == {
        "connection.privateKey": (SECRET_MARKER, CHANGED_SECRET)}


@pytest.mark.parametrize("text, parsed", [
    ("host=10.0.0.1 port=6432 dbname=bazbii user=app password=x",
     {"host": "10.0.0.1", "port": "6432", "dbname": "bazbii", "user": "app", "password": "x"}),
    ("host=h dbname=d password='a b\\'c'", {"host": "h", "dbname": "d", "password": "a b'c"}),
    ("postgresql://u:p%40w@h:5433/db?sslmode=require",
     {"scheme": "postgresql", "user": "u", "password": "p@w", "host": "h", "port": "5433", "dbname": "db",
      "sslmode": "require"}),
    ("just some secret text", None),
    ("password=x", None),  # nothing but the secret: not a connection string worth opening
    ("host=h evil=1", None),  # unknown keywords: not a DSN
])
def test_parse_dsn(text, parsed):
    assert parse_dsn(text) == parsed


@settings(max_examples=80, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=4, max_size=40))
def test_no_password_ever_reaches_the_diff(text):
    password = "Zq~" + text  # a marker no other part of the output contains
    before = {"dsn": f"host=10.0.0.1 dbname=bazbii password='{password}'", "url": url("10.0.0.1", "x")}
    after = {"dsn": f"host=10.0.0.2 dbname=bazbii password='{password}x'", "url": url("10.0.0.2", "y")}
    evaluations = [Evaluation("bazbii", "prod", [resource(i, [("dsn",), ("url",)])], {}, []) for i in (before, after)]
    text = json.dumps([c.__dict__ for r in diff_evaluations(*evaluations) for c in r.changes], ensure_ascii=False)
    assert password not in text and "Zq~" not in text


# --------------------------------------------------------------------------- how the report prints a change
def printed(before, after, secret_paths=(), op="update"):
    import io

    from rich.console import Console

    from offline_preview.diff import ResourceChange
    from offline_preview.report import _print_change

    evaluations = [Evaluation("bazbii", "prod", [resource(i, secret_paths)] if i is not None else [], {}, [])
                   for i in (before, after)]
    [change] = diff_evaluations(None if before is None else evaluations[0], evaluations[1])
    assert isinstance(change, ResourceChange) and change.op == op
    out = io.StringIO()
    _print_change(change, Console(file=out, width=200, force_terminal=False), verbose=False)
    return out.getvalue()


SCRIPT = "set -eu\nsudo docker pull -q gateway:1.4.2\nsudo systemctl restart gateway\necho done\n"


def test_a_change_inside_a_multiline_value_shows_its_changed_lines():
    text = printed({"create": SCRIPT}, {"create": SCRIPT.replace("1.4.2", "1.5.0")})
    assert "-sudo docker pull -q gateway:1.4.2" in text and "+sudo docker pull -q gateway:1.5.0" in text
    assert "echo done" not in text  # only the changed lines and one line of context


def test_a_value_that_becomes_multiline_is_shown_as_its_lines():
    text = printed({"create": "true"}, {"create": SCRIPT})
    assert "-true" in text and "+sudo systemctl restart gateway" in text


def test_a_multiline_secret_stays_masked():
    secret = f"[databases]\nbazbii = host=10.0.0.1 password={PASSWORD}\n"
    text = printed({"stdin": secret}, {"stdin": secret.replace("10.0.0.1", "10.0.0.3")}, [("stdin",)])
    assert PASSWORD not in text and "10.0.0" not in text
    assert f"stdin: {SECRET_MARKER} -> {CHANGED_SECRET}" in text


def test_a_created_resource_prints_no_empty_lines():
    text = printed(None, {"create": "echo hi", "delete": None, "triggers": None}, op="create")
    assert "(none)" not in text and "create: echo hi" in text
