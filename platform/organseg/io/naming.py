"""The one way messages name a series, and only by UIDs' hashes or numbers, never by a header value.

A series has two names, chosen by where it came from, and both come from :func:`series_label`:

- received over a network (STOW-RS, C-STORE, DICOMweb) it is named by the hash of its
  SeriesInstanceUID (``series uid:0123456789``), the tag the node's logs, spool and done records
  use, so one series can be followed through all of them; the sequence its headers establish may
  follow (``series uid:0123456789 (MR-T1-in)``);
- uploaded or read from a folder it is named by its SeriesNumber and InstanceNumbers
  (``SeriesNumber 7 (InstanceNumber 1-40)``), what the sender sees in a viewer.

Either may end with the echo when one SeriesInstanceUID holds several (``at EchoTime 2.3 ms``).
Patient names, IDs, descriptions and file names never appear: headers may identify the patient.
"""

from __future__ import annotations

from organseg.io.privacy import short_uid

#: How much of a UID's hash (hex digits) a name shows: the same tag as :func:`short_uid`.
TAG_DIGITS = 10


def series_label(
    *,
    uid: str | None = None,
    uid_hash: str | None = None,
    sequence: str | None = None,
    number: object = None,
    first: object = None,
    last: object = None,
    unnumbered: str = "the DICOM series",
    echo: str | None = None,
) -> str:
    """The name of a series in messages (see the module docstring for which name when).

    By UID: ``uid`` (hashed here) or ``uid_hash`` (a spool key, the UID's SHA-256 in hex), with the
    ``sequence`` its headers establish when given. Otherwise by ``number`` (SeriesNumber) and the
    ``first``-``last`` InstanceNumbers, or ``unnumbered`` without a SeriesNumber. ``echo`` (an
    EchoTime key; empty: not recorded) is added when the series is one echo of several.
    """
    if uid is not None or uid_hash is not None:
        tag = short_uid(uid) if uid_hash is None else f"uid:{uid_hash[:TAG_DIGITS]}"
        label = f"series {tag}"
        if sequence is not None:
            label += f" ({sequence})"
    else:
        label = f"SeriesNumber {number}" if number not in (None, "") else unnumbered
        if first not in (None, ""):
            label += f" (InstanceNumber {first}" + (
                f"-{last})" if last not in (None, "", first) else ")"
            )
    if echo is not None:
        label += f" at EchoTime {echo or 'unknown'} ms"
    return label
