"""schemathesis hooks for the coverage phase of tests/serve/test_openapi.py (loaded by the CLI from
``SCHEMATHESIS_HOOKS``; not a test module).

schemathesis's own ``positive_data_acceptance`` wants every schema-valid request accepted, which no
upload API can promise: a generated ``file`` is a few arbitrary bytes, never a CT volume, and is
refused for its content. What the schema does promise is that a request it allows is never refused for
a field's *form*; ``form_fields_are_never_refused`` checks exactly that, from the error each refusal
names. The one relation no JSON-Schema pattern can state, an orthonormal ``direction``, is documented in
the field's description and allowed here.
"""

from __future__ import annotations

import re

import schemathesis

from organseg.serve.stow import encode_multipart

# The router's and the raw decoder's complaints about a field's form (organseg.serve.router/wire,
# organseg.io.validate, organseg.modalities): one of these in a refusal of a schema-valid request means
# the schema allowed something the server does not take.
FORM_COMPLAINTS = re.compile(
    r"field '\w+' must|shape must be|dtype '.*' is not accepted|compression '.*' is not supported"
    r"|output_format '.*' is not one of|spacing \[.*\] mm; each must|origin \[.*\] mm is not"
    r"|direction \[.*\] must be 9|unknown modality|must be a file part"
)


@schemathesis.check
def form_fields_are_never_refused(ctx, response, case) -> None:
    meta = case.meta
    if (
        meta is None
        or not meta.generation.mode.is_positive
        or not 400 <= response.status_code < 500
    ):
        return None
    try:
        error = str(response.json().get("error", ""))
    except ValueError:
        return None
    if FORM_COMPLAINTS.search(error):
        raise AssertionError(f"a schema-valid request was refused for its form: {error}")
    return None


@schemathesis.serializer("multipart/related")
def stow_body(ctx, value) -> bytes:
    """STOW-RS: each instance one part of type application/dicom, as the route reads them."""
    parts = value.get("instances") if isinstance(value, dict) else None
    body, _ = encode_multipart(
        [p if isinstance(p, bytes) else str(p).encode() for p in parts or []]
    )
    return body
