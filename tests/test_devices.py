"""Which device each part uses: the decisions from faked capabilities, and on this machine the
real builds (CPU-only llama.cpp, CPU torch and onnxruntime) putting every part on the CPU."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from insan_edge.config.system import ModelSettings
from insan_edge.devices import AUTO_RESERVE_MB, Placement, serving_layers, training_device
from insan_edge.engine import Engine


def no_count() -> int | None:
    raise AssertionError("the layer count is read only when part of the model fits")


def test_zero_layers_or_no_offload_build_is_the_cpu() -> None:
    for requested in (0, -1, 12, "auto"):
        placed = serving_layers(
            requested, offload=False, model_mb=250, free_mb=6000, block_count=no_count
        )
        expected = "n_gpu_layers is 0 in the config" if requested == 0 else "CPU-only build"
        assert placed.device == "cpu" and placed.gpu_layers == 0
        assert expected in placed.reason
    zero = serving_layers(0, offload=True, model_mb=250, free_mb=6000, block_count=no_count)
    assert zero == Placement("cpu", "n_gpu_layers is 0 in the config")


def test_configured_layers_are_kept_when_the_build_offloads() -> None:
    placed = serving_layers(20, offload=True, model_mb=2000, free_mb=100, block_count=no_count)
    assert (placed.device, placed.gpu_layers, placed.reason) == (
        "gpu",
        20,
        "20 layers from the config",
    )
    every = serving_layers(-1, offload=True, model_mb=2000, free_mb=100, block_count=no_count)
    assert (every.gpu_layers, every.reason) == (-1, "all layers from the config")


def test_auto_offloads_what_fits_in_free_memory() -> None:
    # Gemma 3 1B Q4_K_M (~806 MB, 26 layers) on an 8 GB Orin Nano with 4168 MB available.
    fits = serving_layers("auto", offload=True, model_mb=806, free_mb=4168, block_count=no_count)
    assert (fits.device, fits.gpu_layers) == ("gpu", -1)
    assert fits.reason == (
        "all layers: the 806 MB model fits in 4168 MB free less a 1024 MB reserve"
    )
    # A 4.9 GB 8B model with 3000 MB free: 1976 MB of room, 32 layers -> 12 on the GPU.
    part = serving_layers("auto", offload=True, model_mb=4920, free_mb=3000, block_count=lambda: 32)
    assert (part.device, part.gpu_layers) == ("gpu", 12)
    assert part.reason.startswith("auto: 12 of 32 layers: 1976 MB free beyond the reserve")
    short = serving_layers(
        "auto", offload=True, model_mb=806, free_mb=AUTO_RESERVE_MB, block_count=no_count
    )
    assert (short.device, short.gpu_layers) == ("cpu", 0)
    assert "is not more than the 1024 MB reserve" in short.reason
    unknown = serving_layers(
        "auto", offload=True, model_mb=4920, free_mb=3000, block_count=lambda: None
    )
    assert (unknown.device, unknown.reason) == ("cpu", "auto: layer count unknown")
    tiny_room = serving_layers(
        "auto", offload=True, model_mb=40000, free_mb=1100, block_count=lambda: 80
    )
    assert tiny_room.device == "cpu" and "not one of 80 layers fits in 76 MB" in tiny_room.reason


def test_training_device_decision() -> None:
    assert training_device(True) == Placement("cuda", "torch has CUDA")
    failed = training_device(True, "no kernel image is available for execution on the device")
    assert failed.device == "cpu" and "could not be made: no kernel image" in failed.reason
    assert training_device(False).device == "cpu"


# --- this machine: every part on the CPU --------------------------------------------------------


def test_this_machine_serves_on_the_cpu_and_logs_the_fallback(
    tiny_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import llama_cpp

    if llama_cpp.llama_supports_gpu_offload():
        pytest.skip("this llama.cpp build offloads to a GPU")
    with caplog.at_level(logging.INFO, logger="insan_edge.engine"):
        engine = Engine(tiny_model_path, ModelSettings(n_gpu_layers="auto", threads=1))
    engine.close()
    assert engine.device == "cpu" and engine.placement.gpu_layers == 0
    assert "CPU-only build" in engine.placement.reason
    assert "model.cpu_fallback" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="insan_edge.engine"):
        plain = Engine(tiny_model_path, ModelSettings(threads=1))
    plain.close()
    assert plain.placement.as_dict() == {
        "device": "cpu",
        "reason": "n_gpu_layers is 0 in the config",
        "gpu_layers": 0,
    }
    assert "model.cpu_fallback" not in caplog.text


def test_this_machine_trains_on_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    import torch

    from insan_edge.training.model import pick_device

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with caplog.at_level(logging.INFO, logger="insan_edge.training"):
        assert pick_device().type == "cpu"
    assert "trainer.device" in caplog.text and "torch.cuda.is_available() is False" in caplog.text


def test_auto_is_a_valid_setting_and_other_words_are_not() -> None:
    assert ModelSettings(n_gpu_layers="auto").n_gpu_layers == "auto"
    with pytest.raises(ValueError, match="n_gpu_layers"):
        ModelSettings(n_gpu_layers="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_gpu_layers"):
        ModelSettings(n_gpu_layers=-2)
