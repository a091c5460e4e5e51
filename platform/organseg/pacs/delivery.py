"""Where results go: a DICOM node by C-STORE and/or a DICOMweb server by STOW-RS (network edges)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from pydicom.dataset import Dataset

from organseg.errors import OrgansegError


class DeliveryError(OrgansegError):
    """A destination refused or could not be reached; results stay in the outbox for a retry."""


class Destination(Protocol):
    def describe(self) -> str: ...

    def send(self, datasets: list[Dataset]) -> None: ...


_AE_TARGET = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>[^:]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class CStoreDestination:
    """A DICOM node (``AE@HOST:PORT``) that receives results by C-STORE."""

    ae_title: str
    host: str
    port: int
    calling_ae: str = "ORGANSEG"

    @classmethod
    def parse(cls, text: str, calling_ae: str = "ORGANSEG") -> CStoreDestination:
        match = _AE_TARGET.match(text.strip())
        if not match:
            raise OrgansegError(
                f"--send-to {text!r}: expected AE@HOST:PORT, e.g. ORTHANC@127.0.0.1:4242"
            )
        return cls(match["ae"], match["host"], int(match["port"]), calling_ae)

    def describe(self) -> str:
        return f"C-STORE {self.ae_title}@{self.host}:{self.port}"

    def send(self, datasets: list[Dataset]) -> None:
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        for uid in sorted(
            {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}
        ):
            ae.add_requested_context(uid[0], uid[1])
        assoc = ae.associate(self.host, self.port, ae_title=self.ae_title)
        if not assoc.is_established:
            raise DeliveryError(f"{self.describe()}: association refused or unreachable")
        try:
            for ds in datasets:
                status = assoc.send_c_store(ds)
                code = getattr(status, "Status", None)
                if code is None or code not in (0x0000, 0xB000, 0xB007, 0xB006):
                    shown = "no answer" if code is None else f"status 0x{code:04X}"
                    raise DeliveryError(f"{self.describe()}: C-STORE failed ({shown})")
        finally:
            assoc.release()


@dataclass(frozen=True)
class StowDestination:
    """A DICOMweb server's STOW-RS endpoint (the DICOMweb root, e.g. http://pacs/dicom-web)."""

    url: str
    timeout: float = 120.0

    def describe(self) -> str:
        return f"STOW-RS {self.url}"

    def send(self, datasets: list[Dataset]) -> None:
        import requests
        from dicomweb_client.api import DICOMwebClient

        client = DICOMwebClient(url=self.url.rstrip("/"), timeout=self.timeout)
        client.set_http_retry_params(retry=False)
        try:
            response = client.store_instances(datasets)
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            raise DeliveryError(f"{self.describe()}: answered HTTP {status}") from None
        except requests.RequestException as exc:
            raise DeliveryError(f"{self.describe()}: unreachable ({type(exc).__name__})") from None
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            raise DeliveryError(f"{self.describe()}: {len(failed)} instance(s) refused")
