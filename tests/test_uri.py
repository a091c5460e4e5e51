"""URIs shown without their credentials, and storage errors scrubbed of them."""

from __future__ import annotations

import pytest

from organseg.errors import DataError
from organseg.uri import _scrubbed, is_uri, open_uri, shown_uri


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("s3://bucket/a/b.nii.gz", "s3://bucket/a/b.nii.gz"),
        ("s3://KEYID:s3cret@bucket/a.nrrd", "s3://bucket/a.nrrd"),
        ("s3://bucket/a.mha?session_token=tok3n&region=x", "s3://bucket/a.mha"),
        ("/data/a.nii.gz", "/data/a.nii.gz"),
    ],
)
def test_shown_uri(uri: str, shown: str) -> None:
    assert shown_uri(uri) == shown
    assert is_uri(uri) == ("://" in uri)


def test_storage_errors_lose_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-s3cret")
    error = OSError("denied for KEYID with env-s3cret and tok3n\nsecond line")
    text = _scrubbed(error, "s3://KEYID:s3cret@bucket/a?session_token=tok3n")
    assert text == "denied for *** with *** and ***"


def test_a_bad_uri_is_a_data_error_naming_it() -> None:
    with (
        pytest.raises(DataError, match=r"^nosuchscheme://bucket/a\.nii\.gz: not a URI"),
        open_uri("nosuchscheme://user:pw@bucket/a.nii.gz"),
    ):
        pass
