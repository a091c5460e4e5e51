"""Where predictions are computed, chosen once for every caller: in this process from a model directory,
or a served graph over HTTP or gRPC.

``organseg predict`` (files and DICOMweb) and the DICOM node (``organseg dicom listen``) describe their
choice with one :class:`BackendChoice` and get a :class:`Backend` from :func:`open_backend`. The choice
is checked before anything is opened: exactly one target, and each option only where it applies (the
modality gate and the torch device in-process; the token and retry policy of a served graph,
whose gate is its serve config's ``modality_min_*``), so no option is silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from organseg.errors import OrgansegError

if TYPE_CHECKING:
    from organseg.ensemble.inputs import InputPlan, PredictInput
    from organseg.ensemble.prediction import Prediction
    from organseg.ensemble.routing import ModalityPolicy
    from organseg.io.volume import Modality, Volume
    from organseg.serve.client import RetryPolicy

#: The served-graph default: CT volumes through a cold replica can take minutes.
DEFAULT_TIMEOUT_S = 300.0


class Backend(Protocol):
    """What every caller asks of where predictions are computed."""

    def describe(self) -> str:
        """One line for reports and logs: where predictions are computed."""
        ...

    def plan(self, path: Path, modality: str | None) -> list[InputPlan]:
        """What will be segmented under ``path``, before anything is read."""
        ...

    def modalities(self) -> list[Modality]:
        """Modalities the model serves (a series of any other is skipped unread)."""
        ...

    def model_info(self) -> dict[str, Any]:
        """What a report records about the model."""
        ...

    def predict(self, item: PredictInput, modality: str | None) -> Prediction:
        """Segment one planned input."""
        ...

    def segment(self, volume: Volume, modality: str | None) -> Prediction:
        """Segment one volume (a series read elsewhere, e.g. received by the DICOM node)."""
        ...


@dataclass(frozen=True, kw_only=True)
class BackendChoice:
    """Exactly one of ``local`` / ``endpoint`` / ``grpc_target``, and the options of that mode.

    ``device`` and ``policy`` (the modality gate) apply in-process only; ``token_file`` and ``retry``
    to a served graph only (``timeout`` is ignored in-process: the node's destinations use it too)."""

    local: Path | None = None
    endpoint: str | None = None
    grpc_target: str | None = None
    device: str | None = None
    policy: ModalityPolicy | None = None
    token_file: Path | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    retry: RetryPolicy | None = None

    def check(self) -> None:
        """A usage error naming the option when the choice is not exactly one target, or an option
        is given for a mode it does not apply to."""
        chosen = [x for x in (self.local, self.endpoint, self.grpc_target) if x]
        if len(chosen) != 1:
            raise OrgansegError(
                "choose exactly one of --local MODEL_DIR, --endpoint URL or --grpc HOST:PORT"
            )
        if self.local is None:
            if self.policy is not None:
                raise OrgansegError(
                    "--modality-min-* apply to --local; a served endpoint uses its serve config's "
                    "modality_min_* fields"
                )
            if self.device is not None:
                raise OrgansegError(
                    "--device applies to --local; a served endpoint runs on its own devices"
                )
        else:
            if self.token_file is not None:
                raise OrgansegError(
                    "--token-file applies to --endpoint/--grpc; --local needs no token"
                )


def open_backend(choice: BackendChoice) -> Backend:
    """The backend ``choice`` names (checked first). A served graph gets the token of
    ``--token-file``, else ``$ORGANSEG_API_TOKEN``."""
    choice.check()
    if choice.local is not None:
        from organseg.ensemble.backends import LocalBackend

        return LocalBackend(choice.local, choice.device, choice.policy)
    from organseg.serve.client import GrpcBackend, HttpBackend
    from organseg.serve.ops.auth import client_token

    token = client_token(choice.token_file)
    if choice.endpoint is not None:
        return HttpBackend(choice.endpoint, choice.timeout, token, choice.retry)
    return GrpcBackend(str(choice.grpc_target), choice.timeout, token, choice.retry)
