"""Peak memory is measured and moves with allocations; MFU needs a known GPU; the peak table
matches the names CUDA reports."""

from __future__ import annotations

import pytest
import torch

from evotui.train.hardware import (
    describe_device,
    device_peak_flops,
    mfu,
    peak_flops,
    peak_memory_mb,
    reset_peak_memory,
)


def test_cpu_peak_memory_is_measured_and_grows():
    was_reset = reset_peak_memory("cpu")
    before = peak_memory_mb("cpu")
    assert before > 0
    x = torch.ones(64 * 2**20 // 4 * 4)  # 256 MiB, touched
    after = peak_memory_mb("cpu")
    assert after >= before
    if was_reset:
        assert after - before > 200
    del x


def test_mfu_is_none_without_a_known_gpu():
    assert device_peak_flops("cpu", torch.bfloat16) is None
    assert mfu(1e9, 1e4, "cpu", torch.bfloat16) is None


@pytest.mark.parametrize(("name", "dtype", "want"), [
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989e12),  # SXM
    ("NVIDIA H100 PCIe", torch.bfloat16, 756e12),
    ("NVIDIA H100 NVL", torch.float16, 835e12),
    ("NVIDIA H200", torch.bfloat16, 989e12),
    ("NVIDIA GH200 480GB", torch.bfloat16, 989e12),
    ("NVIDIA A100-SXM4-80GB", torch.bfloat16, 312e12),
    ("NVIDIA A100 80GB PCIe", torch.bfloat16, 312e12),
    ("NVIDIA A10G", torch.bfloat16, 70e12),
    ("NVIDIA A10", torch.bfloat16, 125e12),
    ("NVIDIA L4", torch.bfloat16, 121e12),
    ("NVIDIA L40S", torch.bfloat16, 362e12),
    ("NVIDIA GeForce RTX 4090", torch.bfloat16, 165.2e12),
    ("Tesla V100-SXM2-16GB", torch.float16, 125e12),
])
def test_peak_table_matches_device_names(name, dtype, want):
    assert peak_flops(name, dtype) == pytest.approx(want)


def test_peak_table_dtypes_and_unknowns():
    h100 = "NVIDIA H100 80GB HBM3"
    assert peak_flops(h100, torch.float32) == pytest.approx(67e12)
    assert peak_flops(h100, torch.float32, tf32=True) == pytest.approx(494e12)
    assert peak_flops("Tesla V100-SXM2-16GB", torch.bfloat16) is None  # no bf16 tensor cores
    assert peak_flops("Tesla V100-SXM2-16GB", torch.float32, tf32=True) == pytest.approx(15.7e12)
    assert peak_flops("Some Future GPU", torch.bfloat16) is None
    assert peak_flops(h100, torch.int8) is None


def test_describe_cpu():
    text = describe_device("cpu")
    assert "threads" in text and "GiB" in text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory_and_description():
    dev = torch.device("cuda")
    assert reset_peak_memory(dev)
    x = torch.empty(64 * 2**20, dtype=torch.uint8, device=dev)
    assert peak_memory_mb(dev) >= 64
    del x
    assert torch.cuda.get_device_name(dev) in describe_device(dev)
