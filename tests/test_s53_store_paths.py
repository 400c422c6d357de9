"""A path inside a store, in messages, stands before the store URI's query (session 53).

``f"{uri}/{rel}"`` of an S3 store addressed with ``?endpoint_override=...&scheme=http`` read
``s3://lab/x?endpoint_override=http://127.0.0.1:9000&scheme=http/_meta/manifests``: the path
looked like part of the last parameter's value."""

from __future__ import annotations

import pytest

from meta_study.store._files import display_path, display_uri


@pytest.mark.parametrize(("uri", "rel", "shown"), [
    ("s3://lab/x?endpoint_override=http://127.0.0.1:9000&scheme=http", "_meta/manifests",
     "s3://lab/x/_meta/manifests?endpoint_override=http://127.0.0.1:9000&scheme=http"),
    ("s3://lab/x/", "up/a/part.parquet", "s3://lab/x/up/a/part.parquet"),
    ("/data/store", "_meta/manifests/0000000002.json", "/data/store/_meta/manifests/0000000002.json"),
    ("s3://lab/x?region=eu", "", "s3://lab/x?region=eu"),
])
def test_the_path_stands_before_the_query(uri: str, rel: str, shown: str) -> None:
    assert display_path(uri, rel) == shown


def test_secrets_stay_hidden_when_a_path_is_joined() -> None:
    shown = display_path(display_uri("s3://lab/x?access_key=AK&secret_key=SK&scheme=http"), "_meta")
    assert shown == "s3://lab/x/_meta?access_key=***&secret_key=***&scheme=http"
