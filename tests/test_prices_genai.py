"""Default prices from genai-prices' bundled data (``moa-dsl[prices]``): skipped without it.

The expected dollars are genai-prices' own, computed here, so the tests hold as its data
changes from one version to the next.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from moa._cost import DEFAULT_PRICES, Price, Prices, cost
from moa._history import CallRecord, History, StepRecord

genai_prices = pytest.importorskip("genai_prices")


def call(model: str, i: int = 1000, o: int = 500) -> CallRecord:
    return CallRecord(
        model=model,
        messages=({"role": "user", "content": "q"},),
        temp=0.7,
        max_tokens=64,
        text="answer",
        input_tokens=i,
        output_tokens=o,
    )


def history(*calls: CallRecord) -> History:
    step = StepRecord(step="S", path=(0,), kind="propose", inputs=(), outputs=("x",), calls=calls)
    return History(prompt="q", seed=0, steps=(step,), outputs=("x",))


def dollars(model: str, i: int, o: int, provider_id: str | None = None) -> float:
    usage = genai_prices.Usage(input_tokens=i, output_tokens=o)
    return float(genai_prices.calc_price(usage, model, provider_id=provider_id).total_price)


def listed_price(model: str, provider_id: str | None = None) -> Price:
    calc = genai_prices.calc_price(genai_prices.Usage(), model, provider_id=provider_id)
    flat = [
        getattr(p, "base", p) for p in (calc.model_price.input_mtok, calc.model_price.output_mtok)
    ]
    return Price(float(flat[0]), float(flat[1]))


# A dated name genai-prices lists under its alias, and which moa's old table did not name.
KNOWN = "gpt-4o-mini-2024-07-18"


def test_a_model_genai_prices_knows_is_priced_from_its_bundled_data():
    c = history(call(KNOWN, 1000, 500), call("smollm2")).cost()
    assert c.complete and c.unknown == ()
    assert c.total == pytest.approx(dollars(KNOWN, 1000, 500)) and c.total > 0
    assert c.by_model == {KNOWN: pytest.approx(c.total), "smollm2": 0.0}
    assert DEFAULT_PRICES.price(KNOWN) == listed_price(KNOWN)
    assert DEFAULT_PRICES.price(KNOWN.upper()) == listed_price(KNOWN)  # names in any case


@pytest.mark.parametrize(
    "model", ["gpt-5-nano-2025-08-07", "claude-sonnet-4-5", "gemini-2.5-flash"]
)
def test_the_cli_default_models_that_name_their_provider_are_priced(model):
    assert DEFAULT_PRICES.call_cost(model, 1000, 1000) == pytest.approx(dollars(model, 1000, 1000))


def test_a_tiered_price_is_applied_by_each_calls_input_tokens():
    model = "claude-sonnet-4-5"  # a higher rate past 200,000 input tokens
    small, large = (1000, 100), (300_000, 100)
    c = history(call(model, *small), call(model, *large)).cost()
    assert c.known == pytest.approx(dollars(model, *small) + dollars(model, *large))
    base = listed_price(model)
    assert DEFAULT_PRICES.price(model) == base  # the first tier
    at_base = (large[0] * base.input + large[1] * base.output) / 1e6
    assert DEFAULT_PRICES.call_cost(model, *large) > at_base


@pytest.mark.parametrize(
    ("provider", "model"),
    [("groq", "llama-3.3-70b-versatile"), ("openrouter", "qwen/qwen-2.5-72b-instruct")],
)
def test_a_provider_genai_prices_cannot_infer_is_named(provider, model):
    # Nothing in these names says which provider sold the call.
    assert DEFAULT_PRICES.price(model) is None
    at = Prices(DEFAULT_PRICES, genai_prices=provider)
    assert at.price(model) == listed_price(model, provider)
    assert at.call_cost(model, 1000, 500) == pytest.approx(dollars(model, 1000, 500, provider))
    assert at.price("smollm2") == Price(0, 0)


def test_an_unknown_provider_id_is_refused():
    with pytest.raises(ValueError, match=r"genai_prices='grok'\): genai-prices lists no such"):
        Prices(DEFAULT_PRICES, genai_prices="grok")


def test_the_users_prices_win_over_genai_prices():
    mine = DEFAULT_PRICES | {KNOWN: (1, 1)}
    assert mine.price(KNOWN) == Price(1, 1)
    assert mine.call_cost(KNOWN, 1_000_000, 0) == pytest.approx(1.0)


def test_a_table_without_the_option_never_asks_genai_prices():
    mine = Prices({"a": (1, 2)})
    assert mine.price(KNOWN) is None
    c = cost(history(call("a"), call(KNOWN)), {"a": (1, 2)})
    assert c.unknown == (KNOWN,)


@pytest.mark.parametrize("model", ["claude", "llama-70b", "mystery-model-x", "gpt-5-my-finetune"])
def test_names_genai_prices_does_not_list_stay_unknown(model):
    c = history(call(model)).cost()
    assert c.unknown == (model,) and str(c) == f"unknown ({model})"


def test_pricing_never_uses_the_network_or_starts_a_thread():
    code = f"""
import socket, sys, threading

def refuse(*args, **kwargs):
    raise AssertionError("the network was used")

socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse

import moa

assert moa.DEFAULT_PRICES.price({KNOWN!r}) is not None
assert "genai_prices" in sys.modules
assert threading.active_count() == 1, threading.enumerate()
"""
    subprocess.run([sys.executable, "-c", code], check=True)
