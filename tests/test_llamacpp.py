"""The llama.cpp load every model goes through: AMX buffers off where they break adapters."""

from __future__ import annotations

from insan_edge import llamacpp


def test_the_system_line_says_whether_amx_is_used() -> None:
    assert llamacpp.builds_amx("CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 |")
    assert not llamacpp.builds_amx("CPU : AVX2 = 1 | AMX_INT8 = 0 | REPACK = 1 |")
    assert not llamacpp.builds_amx("CPU : NEON = 1 | ARM_FMA = 1 | DOTPROD = 1 |")


def test_models_load_without_extra_buffers_exactly_where_amx_is_built() -> None:
    module = llamacpp.load()
    assert llamacpp.load() is module  # once per process
    info = module.llama_print_system_info().decode()
    params = module.llama_cpp.llama_model_default_params()
    assert params.use_extra_bufts is (not llamacpp.builds_amx(info))
    assert params.n_gpu_layers == module.llama_cpp.llama_model_default_params().n_gpu_layers
