"""The one ``--device`` resolver of the labeller, training and evaluation."""

import pytest
import torch

from baselines.runtime.config import TrainError
from baselines.runtime.config import resolve_device as training_device
from mipkit.core.devices import resolve_device
from mipkit.core.errors import MipkitError


def test_auto_and_cpu_resolve_on_any_machine():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cuda_is_this_process_gpu_when_a_rank_is_given():
    if not torch.cuda.is_available():
        with pytest.raises(MipkitError, match="no CUDA device"):
            resolve_device("cuda:1")
        return
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda")


@pytest.mark.parametrize("option", ["tpu", "gpu", ""])
def test_unknown_devices_are_one_line_errors_of_the_callers_type(option):
    with pytest.raises(MipkitError, match="--device"):
        resolve_device(option)
    with pytest.raises(TrainError, match="--device"):
        training_device(option)
