"""The node in front of the served graph with a model that stacks T1 phases: it learns the stacking
from GET /v1/models (gRPC ListModels), sends a study's two series together (voxels and geometry),
and the SEG equals in-process prediction, over HTTP and gRPC."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest

from organseg.io.volume import Modality
from organseg.pacs.grouping import series_info
from organseg.pacs.node import SeriesNode, make_backend
from organseg.pacs.spool import Spool, key_of
from tests.conftest import loopback_serve_config, serving

pytestmark = [pytest.mark.ray, pytest.mark.slow]
IN = Modality.MR_T1_IN


@pytest.fixture(scope="module")
def served_stack(ray_cluster, stack_model: Path, pacs_tools):
    """The stacking model deployed on free loopback ports: ``(http url, grpc target)``."""
    http_port, grpc_port = pacs_tools.free_port(), pacs_tools.free_port()
    with serving(loopback_serve_config(stack_model, http_port, grpc_port)):
        yield f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"


def test_served_node_learns_the_stacking_and_segments_a_study_in_one_call(
    served_stack, stack_model, synth_root, stack_tools, pacs_tools, tmp_path
) -> None:
    from organseg.ensemble.predictor import EnsemblePredictor
    from organseg.io.dicom import read_dicom_series

    http, grpc_target = served_stack
    mr = synth_root / "Train_Sets" / "MR" / "1" / "T1DUAL" / "DICOM_anon"
    t1_in, t1_out = stack_tools.copy_study([mr / "InPhase", mr / "OutPhase"], tmp_path, "served")
    volumes = [read_dicom_series(mr / k, order="geometry") for k in ("InPhase", "OutPhase")]
    local = EnsemblePredictor(stack_model, device="cpu").predict(volumes[0], None, volumes[1])
    expected = stack_tools.mask_by_instance(local.labels, t1_in.files)
    assert expected.any()

    for name, backend in (
        ("http", make_backend(endpoint=http)),
        ("grpc", make_backend(grpc_target=grpc_target)),
    ):
        facts = backend.stacking.known()
        assert (facts.ensemble, facts.stacked) == ("pacs-stack", {IN, Modality.MR_T1_OUT})
        assert (facts.serves, facts.also_alone) == ({Modality.CT, IN}, frozenset())
        spool = Spool(tmp_path / f"spool-{name}")
        files = t1_in.files + t1_out.files
        random.Random(5).shuffle(files)
        for path in files:
            ds = pydicom.dcmread(path)
            spool.add(ds.SeriesInstanceUID, ds.SOPInstanceUID, path.read_bytes(), series_info(ds))
        node = SeriesNode(spool, backend.segment, [], quiet_s=0.0, stacking=backend.stacking)
        (outcome,) = node.poll()
        assert outcome.status == "delivered", outcome.detail
        (seg,) = (spool.root / "results" / key_of(t1_in.series_uid)).glob("*-SEG.dcm")
        mask = pacs_tools.seg_mask(pydicom.dcmread(seg), t1_in.sop_uids)
        assert np.array_equal(mask, expected), name
        assert spool.is_done(key_of(t1_out.series_uid))
