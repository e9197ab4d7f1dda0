"""Optional dependencies: ``import moa`` imports no SDK, and a missing extra says how to
install it."""

import subprocess
import sys

import pytest

from moa.clients import MissingExtraError, anthropic_client, litellm_client, openai_client


def test_importing_moa_and_moa_clients_imports_no_provider_sdk():
    code = (
        "import moa, moa.clients, sys; print([m for m in "
        "('openai', 'anthropic', 'litellm', 'llama_cpp') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "module, extra, make",
    [
        ("openai", "openai", lambda: openai_client(api_key="sk-test-0123456789")),
        ("anthropic", "anthropic", lambda: anthropic_client("sk-ant-0123456789")),
        ("litellm", "litellm", lambda: litellm_client(prefix="groq/")),
    ],
)
def test_a_missing_extra_gives_the_install_command(monkeypatch, module, extra, make):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError) as info:
        make()
    assert f"pip install 'moa-dsl[{extra}]'" in str(info.value)
    assert isinstance(info.value, ImportError)
