"""Every member of every shipped config builds with its kwargs and maps its inputs to the task's organs.

The networks are built on PyTorch's ``meta`` device: shapes and module wiring are real, but no weights
are allocated or computed, so the five-member 512² ensemble and the 100M-parameter cascade cost
milliseconds. ImageNet weights are left out (they need the network); the same builder runs either way.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from organseg.config import ExperimentConfig, load_config
from organseg.io.volume import Modality
from organseg.models import create_member
from organseg.preprocess.channels import to_channels
from organseg.tasks import get_task

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
#: Divisible by 32 like every preprocess.size; small, so the meta graph stays cheap.
SIZE = 64


def _channels(config: ExperimentConfig, modality: Modality) -> int:
    stacked = modality is Modality.MR_T1_IN and config.preprocess.t1_mode == "stack"
    return 2 if stacked else 1


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_members_build_and_predict_their_organs(path: Path) -> None:
    config = load_config(path)
    for member in config.members:
        classes = len(get_task(config.task).organs_for(member.modalities or []))
        with torch.device("meta"), torch.no_grad():
            model = create_member(member.arch, member.in_channels, classes, **member.kwargs).eval()
            for modality in member.modalities or []:
                x = torch.zeros(2, _channels(config, modality), SIZE, SIZE)
                x = to_channels(x, member.in_channels)
                shape: tuple[int, ...] = (SIZE, SIZE)
                if member.volume is not None:  # a 3D member sees its configured patch
                    shape = member.volume.patch
                    x = torch.zeros(1, member.in_channels, *shape)
                logits = model(x)
                assert tuple(logits.shape) == (x.shape[0], classes, *shape), (
                    f"{path.name}: {member.name} on {modality.value}"
                )
            if member.adversarial.enabled:
                # the discriminator judges image ⊕ mask, as the trainer builds it
                disc = create_member("patch_discriminator", member.in_channels + classes, 1).eval()
                pair = torch.zeros(2, member.in_channels + classes, SIZE, SIZE)
                assert disc(pair).shape[:2] == (2, 1)
