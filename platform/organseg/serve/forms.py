"""Reading a ``multipart/form-data`` request: malformed, oversized or ambiguous forms are the sender's
fault, answered 400 / 413 with what is wrong, never a 500.

Starlette's parser does the parsing (with python-multipart); it reports a malformed body as an
``HTTPException`` whose detail does not name the field at fault. Here the parser is driven directly
so that its ``MultiPartException`` becomes a :class:`~organseg.errors.DataError` (or
:class:`~organseg.errors.RequestTooLarge` for a text field past the part-size limit) naming the
field where the parser knows it, and a field sent twice is refused: every field of the API holds one
value, and a second ``file`` part would otherwise be silently ignored.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.datastructures import FormData
from starlette.formparsers import MultiPartException, MultiPartParser

from organseg.errors import DataError, RequestTooLarge
from organseg.serve.wire import WireLimits, bounded_request

#: Starlette's limit on one text (non-file) part, kept: the API's text fields hold a few characters.
MAX_TEXT_PART_BYTES = 1024 * 1024


def _refusal(exc: MultiPartException, parser: MultiPartParser) -> DataError:
    message = exc.message
    part = getattr(parser, "_current_part", None)  # the part being parsed when the parser stopped
    name = getattr(part, "field_name", "") or ""
    if message.startswith("Part exceeded maximum size"):
        field = f"form field {name!r}" if name else "a form field"
        return RequestTooLarge(
            f"{field} passed {MAX_TEXT_PART_BYTES // 1024} KiB; text fields hold a few characters "
            "(send a volume, zip or raw voxels as a file part, with a filename)"
        )
    if "name" in message and "must be provided" in message:
        return DataError(
            "malformed multipart/form-data: a part has no name (its Content-Disposition header "
            'needs name="file" or the name of another field)'
        )
    if message.startswith("Invalid multipart data"):
        message = (
            "the body does not follow its boundary (each part: a boundary line, its headers, a "
            "blank line, its data)"
        )
    return DataError(f"malformed multipart/form-data: {message.rstrip('.')}")


#: Fields sent once per item: ``channels``, one file part per channel of a multi-channel model.
REPEATABLE = frozenset({"channels"})


def single_valued(form: FormData) -> None:
    """DataError naming each field (but :data:`REPEATABLE`) the form carries more than once."""
    counts = Counter(k for k, _ in form.multi_items())
    doubled = sorted(k for k, n in counts.items() if n > 1 and k not in REPEATABLE)
    if doubled:
        names = ", ".join(repr(k) for k in doubled)
        raise DataError(
            f"field {names} sent more than once; each field holds one value (which one to use "
            "would be a guess): send it once"
        )


async def read_form(request: Any, limits: WireLimits, max_files: int, max_fields: int) -> FormData:
    """The request's form, its byte limit enforced while the body streams in; every field once."""
    bounded = bounded_request(request, limits)
    parser = MultiPartParser(
        bounded.headers,
        bounded.stream(),
        max_files=max_files,
        max_fields=max_fields,
        max_part_size=MAX_TEXT_PART_BYTES,
    )
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise _refusal(exc, parser) from None
    try:
        single_valued(form)
    except DataError:
        await form.close()
        raise
    return form
