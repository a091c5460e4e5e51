"""`organseg predict`'s backend options in every mode: an option that applies is honoured (with
`--dicomweb` too: the token file, the modality gate, the device), one that does not is a usage error
(one `error:` line, exit code 2), never silently dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from organseg.ensemble.routing import ModalityPolicy
from tests.conftest import run_cli_folded

STUDY = ["--dicomweb", "http://127.0.0.1:9/dicom-web", "--study", "1.2.3", "--stow"]
GATE = ["--modality-min-confidence", "0.75", "--modality-min-held-out-accuracy", "0.8",
        "--modality-min-held-out-series", "6"]  # fmt: skip


def _run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    return run_cli_folded(capsys, *args)


@pytest.fixture
def fetched(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """The WADO-RS/STOW-RS edge replaced by a recorder of what the command hands it (the backend's
    segmenter included), so the test inspects the backend the study would be segmented with."""
    import organseg.pacs.dicomweb as dicomweb

    calls: list[dict] = []

    def record(url, study, series, segment, outputs, stow, out, modality):
        calls.append({"segment": segment, "series": series, "modality": modality})
        return []

    monkeypatch.setattr(dicomweb, "predict_dicomweb", record)
    return calls


def test_dicomweb_with_local_honours_the_gate_and_the_device(
    capsys, fetched, liver_everywhere_model: Path
) -> None:
    code, output = _run(capsys, "predict", *STUDY, "--local", liver_everywhere_model,
                        "--device", "cpu", *GATE)  # fmt: skip
    assert code == 0, output
    (call,) = fetched
    predictor = call["segment"].__self__.predictor
    assert predictor.policy == ModalityPolicy(
        min_confidence=0.75, min_held_out_accuracy=0.8, min_held_out_series=6
    )
    assert str(predictor.device) == "cpu"


@pytest.mark.parametrize("flag", ["--endpoint", "--grpc"])
def test_dicomweb_with_a_served_endpoint_sends_the_token_file(
    capsys, fetched, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flag: str
) -> None:
    monkeypatch.delenv("ORGANSEG_API_TOKEN", raising=False)
    token = tmp_path / "token"
    token.write_text("s3cret-token-value\n")
    token.chmod(0o600)
    target = "http://127.0.0.1:9" if flag == "--endpoint" else "127.0.0.1:9"
    code, output = _run(capsys, "predict", *STUDY, flag, target, "--token-file", token)
    assert code == 0, output
    client = fetched[0]["segment"].__self__.client
    if flag == "--endpoint":
        assert client.http.headers["authorization"] == "Bearer s3cret-token-value"
    else:
        assert client.metadata == [("authorization", "Bearer s3cret-token-value")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # --dicomweb: a served endpoint gates with its serve config, runs on its own devices
        ([*STUDY, "--endpoint", "http://127.0.0.1:9", *GATE[:2]], "--modality-min-* apply to --local"),
        ([*STUDY, "--grpc", "127.0.0.1:9", "--device", "cpu"], "--device applies to --local"),
        # --dicomweb: its results are DICOM, named by series
        ([*STUDY, "--endpoint", "http://127.0.0.1:9", "--format", "png"], "--format: not with --dicomweb"),
        ([*STUDY, "--endpoint", "http://127.0.0.1:9", "--overlay", "ov", "--overwrite"],
         "--overlay, --overwrite: not with --dicomweb"),
        # files
        (["in.nii.gz", "-o", "out.nii.gz", "--endpoint", "http://127.0.0.1:9", "--device", "cpu"],
         "--device applies to --local"),
        (["in.nii.gz", "-o", "out.nii.gz", "--local", "model", "--token-file", "token"],
         "--token-file applies to --endpoint/--grpc"),
        (["in.nii.gz", "-o", "out.nii.gz", "--local", "model", "--stow"],
         "--series and --stow go with --dicomweb"),
        (["in.nii.gz", "-o", "out.nii.gz", "--local", "model", "--series", "1.2"],
         "--series and --stow go with --dicomweb"),
    ],
)  # fmt: skip
def test_an_option_that_does_not_apply_is_a_usage_error(
    capsys, fetched, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    code, output = _run(capsys, "predict", *args)
    assert code == 2, output
    assert output.startswith("error:"), output
    assert output.count("error:") == 1, output
    assert message in output, output
    assert not fetched  # refused before anything was fetched
    assert list(tmp_path.iterdir()) == []  # and nothing was written
