"""The embedded model's guard against llama.cpp builds that would crash the process, and its
thread default. The system-info strings are llama_cpp.llama_print_system_info()'s, as printed
by a native build on an AMX Xeon and by the portable build."""

from __future__ import annotations

import sys
import types

import pytest

from moa.clients import UnsafeBuildError, _local, default_threads

PORTABLE = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "LLAMAFILE = 1 | REPACK = 1 | "
)
NATIVE_AMX = (
    "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | "
    "AVX512 = 1 | AVX512_VBMI = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | AMX_INT8 = 1 | "
    "LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
)
XEON_FLAGS = {
    "pni",
    "ssse3",
    "avx",
    "avx2",
    "f16c",
    "fma",
    "bmi2",
    "avx512f",
    "avx512vbmi",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
}
AVX2_FLAGS = {"pni", "ssse3", "avx", "avx2", "f16c", "fma", "bmi2"}


def test_the_portable_build_passes_on_any_avx2_cpu():
    _local.check_build(PORTABLE, AVX2_FLAGS)
    _local.check_build(PORTABLE, XEON_FLAGS)
    _local.check_build(PORTABLE, None)
    assert _local.build_problems(PORTABLE) == []


def test_an_amx_build_is_refused_even_where_the_cpu_reports_amx():
    with pytest.raises(UnsafeBuildError) as info:
        _local.check_build(NATIVE_AMX, XEON_FLAGS)
    message = str(info.value)
    assert "AMX_INT8" in message and "ldtilecfg" in message
    assert _local.REBUILD_COMMAND in message
    assert 'CMAKE_ARGS="-DGGML_OPENMP=OFF -DGGML_NATIVE=OFF"' in message
    assert "--no-cache-dir" in message  # pip's cache would hand back the same wheel


def test_amx_may_be_allowed_by_whoever_knows_it_works():
    _local.check_build(NATIVE_AMX, XEON_FLAGS, allow_amx=True)


def test_a_build_for_another_cpu_is_refused_before_it_dies_of_sigill():
    built_elsewhere = PORTABLE + "AVX512 = 1 | AVX512_VNNI = 1 | "
    with pytest.raises(UnsafeBuildError, match=r"AVX512, AVX512_VNNI.*illegal instruction"):
        _local.check_build(built_elsewhere, AVX2_FLAGS)
    no_avx2 = {"pni", "ssse3", "avx"}
    with pytest.raises(UnsafeBuildError, match="AVX2"):
        _local.check_build(PORTABLE, no_avx2)


def test_features_that_are_off_or_unknown_to_the_cpu_table_are_not_required():
    _local.check_build(PORTABLE + "AVX512 = 0 | AMX_INT8 = 0 | NEW_THING = 1 | ", AVX2_FLAGS)


def test_build_problems_name_what_is_not_portable():
    problems = _local.build_problems(NATIVE_AMX)
    assert any("OpenMP" in p for p in problems)
    assert any("AVX512" in p and "AMX_INT8" in p for p in problems)
    assert _local.build_problems(PORTABLE + "OPENMP = 1 | ") == [
        "built with OpenMP (slow under concurrent calls)"
    ]


@pytest.fixture
def fake_llama_cpp(monkeypatch, tmp_path):
    """A stand-in llama_cpp module whose system info is ``info[0]``; loading a model fails the
    test, since the guard must stop the process before llama.cpp runs anything."""
    info = [PORTABLE]

    def load(**_):
        pytest.fail("the model was loaded despite the unsafe build")

    module = types.SimpleNamespace(llama_print_system_info=lambda: info[0].encode(), Llama=load)
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    monkeypatch.setattr(_local, "_checked", False)
    monkeypatch.setattr(_local, "_cpu_flags", lambda: XEON_FLAGS)
    monkeypatch.delenv(_local.ALLOW_AMX_ENV, raising=False)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    return info, model


def test_local_client_refuses_an_amx_build_before_loading(fake_llama_cpp):
    info, model = fake_llama_cpp
    info[0] = NATIVE_AMX
    with pytest.raises(UnsafeBuildError, match="AMX"):
        _local.local_client(model)


def test_the_guard_also_runs_where_the_model_is_loaded(fake_llama_cpp):
    # A LocalClient built directly (not through local_client) is checked on its first call.
    info, model = fake_llama_cpp
    info[0] = NATIVE_AMX
    client = _local.LocalClient(model)
    with pytest.raises(UnsafeBuildError):
        client._engine("m")


def test_the_allow_amx_variable_lets_an_amx_build_load(fake_llama_cpp, monkeypatch):
    info, model = fake_llama_cpp
    info[0] = NATIVE_AMX
    monkeypatch.setenv(_local.ALLOW_AMX_ENV, "1")
    _local.local_client(model)


def test_a_file_llama_cannot_load_is_a_provider_error_not_retried(fake_llama_cpp, monkeypatch):
    _, model = fake_llama_cpp

    def refuse(**_):
        raise ValueError(f"Failed to load model from file: {model}")

    monkeypatch.setattr(sys.modules["llama_cpp"], "Llama", refuse)
    client = _local.local_client(model)
    with pytest.raises(_local.ProviderError, match="cannot load the model file") as info:
        client._engine("m")
    assert info.value.retryable is False


def test_default_threads_is_half_the_usable_cores(monkeypatch):
    monkeypatch.delenv(_local.THREADS_ENV, raising=False)
    for cores, threads in ((1, 1), (2, 1), (3, 1), (8, 4)):
        monkeypatch.setattr(_local.os, "sched_getaffinity", lambda _, n=cores: set(range(n)))
        assert default_threads() == threads


def test_moa_threads_overrides_the_default(monkeypatch):
    monkeypatch.setenv(_local.THREADS_ENV, "2")
    assert default_threads() == 2
    for bad in ("0", "two", "-1", ""):
        monkeypatch.setenv(_local.THREADS_ENV, bad)
        with pytest.raises(ValueError, match="MOA_THREADS"):
            default_threads()


def test_prompt_threads_follow_the_generation_threads(tmp_path):
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    client = _local.LocalClient(model, n_threads=3)
    assert client.options["n_threads"] == client.options["n_threads_batch"] == 3
    assert _local.LocalClient(model, n_threads_batch=2).options["n_threads_batch"] == 2
