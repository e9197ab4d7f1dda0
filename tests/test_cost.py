"""Dollar cost of a run: price tables, their JSON form, and the sum over a history's calls."""

from __future__ import annotations

import json
import math
import pickle
import subprocess
import sys
from types import MappingProxyType

import pytest

from moa import _cost, recipes
from moa._cost import (
    DEFAULT_PRICES,
    EMBEDDED_MODELS,
    PRICES_AS_OF,
    Cost,
    Price,
    Prices,
    cost,
)
from moa._history import CallRecord, History, StepRecord

PRICES = Prices({"a": (1.0, 2.0), "b": Price(0.5, 4.0)})


def call(
    model: str = "a",
    i: int | None = 1000,
    o: int | None = 500,
    *,
    error: str | None = None,
    cancelled: bool = False,
    cached: bool = False,
    hedges: tuple[CallRecord, ...] = (),
) -> CallRecord:
    return CallRecord(
        model=model,
        messages=({"role": "user", "content": "q"},),
        temp=0.7,
        max_tokens=64,
        text=None if error or cancelled else "answer",
        input_tokens=i,
        output_tokens=o,
        attempts=1,
        error=error,
        cancelled=cancelled,
        hedges=hedges,
        cached=cached,
    )


def history(*steps: tuple[CallRecord, ...]) -> History:
    records = tuple(
        StepRecord(step=f"S{n}", path=(n,), kind="propose", inputs=(), outputs=("x",), calls=calls)
        for n, calls in enumerate(steps)
    )
    return History(prompt="q", seed=0, steps=records, outputs=("x",))


# -- summing a run ---------------------------------------------------------------------------------
def test_known_total_by_hand():
    h = history((call("a", 1000, 500), call("b", 2000, 100)), (call("a", 10, 20),))
    c = cost(h, PRICES)
    a = (1000 * 1.0 + 500 * 2.0) / 1e6 + (10 * 1.0 + 20 * 2.0) / 1e6
    b = (2000 * 0.5 + 100 * 4.0) / 1e6
    assert c.known == pytest.approx(a + b)
    assert c.total == pytest.approx(a + b)
    assert c.complete and c.unknown == ()
    assert dict(c.by_model) == pytest.approx({"a": a, "b": b})
    assert c.cached_calls == 0


def test_unknown_model_is_unknown_not_zero():
    c = cost(history((call("a", 1_000_000, 0), call("mystery"))), PRICES)
    assert c.unknown == ("mystery",)
    assert not c.complete
    assert c.total is None
    assert c.known == pytest.approx(1.0)
    assert c.by_model["mystery"] is None
    assert str(c) == "$1.00 + unknown (mystery)"


def test_only_unknown_models_never_print_zero():
    c = cost(history((call("zeta"), call("alpha"), call("zeta"))), PRICES)
    assert c.unknown == ("alpha", "zeta")
    assert c.known == 0 and c.total is None
    assert str(c) == "unknown (alpha, zeta)"
    assert "$0" not in str(c)


def test_unknown_token_counts_make_the_model_unknown():
    c = cost(history((call("a", None, 10), call("a", 1000, 0), call("b", 10, None))), PRICES)
    assert c.unknown == ("a", "b")
    assert c.by_model == {"a": None, "b": None}
    # The call that reported its tokens is still part of the known sum.
    assert c.known == pytest.approx(1000 / 1e6)
    assert c.total is None


def test_unpriced_call_after_priced_ones_stays_unknown():
    c = cost(history((call("a"), call("a", None, None), call("a"))), PRICES)
    assert c.by_model["a"] is None and c.unknown == ("a",)


def test_cached_calls_are_free_and_counted():
    h = history((call("a", cached=True), call("mystery", None, None, cached=True), call("b")))
    c = cost(h, PRICES)
    assert c.cached_calls == 2
    assert c.complete
    assert c.by_model == {"a": 0.0, "mystery": 0.0, "b": pytest.approx((500 + 2000) / 1e6)}
    assert c.known == pytest.approx((1000 * 0.5 + 500 * 4.0) / 1e6)


def test_failed_and_cancelled_calls_are_left_out():
    h = history((call("a"), call("mystery", error="boom"), call("b", cancelled=True)))
    c = cost(h, PRICES)
    assert c.complete
    assert set(c.by_model) == {"a"}
    assert c.known == pytest.approx(2000 / 1e6)


def test_answered_hedges_are_charged():
    hedges = (call("b", 100, 100), call("mystery", error="slow"), call("a", 5, 5, cancelled=True))
    c = cost(history((call("a", 1000, 500, hedges=hedges),)), PRICES)
    assert c.complete
    assert c.known == pytest.approx(2000 / 1e6 + (100 * 0.5 + 100 * 4.0) / 1e6)
    assert set(c.by_model) == {"a", "b"}


def test_hedges_of_a_failed_call_are_charged():
    c = cost(history((call("a", error="boom", hedges=(call("b", 0, 1_000_000),)),)), PRICES)
    assert c.known == pytest.approx(4.0) and set(c.by_model) == {"b"}


def test_empty_run_costs_zero():
    c = cost(history(), PRICES)
    assert c == Cost(known=0.0, unknown=(), by_model={})
    assert c.total == 0 and str(c) == "$0"


def test_default_prices_are_used_when_none_given():
    h = history((call("smollm2"), call("gpt-5-nano-2025-08-07", 1_000_000, 1_000_000)))
    assert cost(h) == cost(h, DEFAULT_PRICES) == h.cost()
    assert cost(h).by_model["smollm2"] == 0.0
    assert cost(h).by_model["gpt-5-nano-2025-08-07"] == DEFAULT_PRICES.call_cost(
        "gpt-5-nano-2025-08-07", 1_000_000, 1_000_000
    )


def test_plain_mapping_is_accepted_as_prices():
    c = cost(history((call("a", 1_000_000, 0),)), {"a": (3, 0)})
    assert c.total == pytest.approx(3.0)


def test_cost_argument_errors_state_the_rule():
    with pytest.raises(TypeError, match="history must be a moa.History"):
        cost([], PRICES)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="prices must be a moa.Prices"):
        cost(history(), 3)  # type: ignore[arg-type]


# -- Cost as a value ------------------------------------------------------------------------------
def test_cost_is_a_read_only_value():
    c = cost(history((call("a"), call("mystery"))), PRICES)
    assert isinstance(c.by_model, MappingProxyType)
    with pytest.raises(TypeError):
        c.by_model["a"] = 0.0  # type: ignore[index]
    with pytest.raises(AttributeError):
        c.known = 0.0  # type: ignore[misc]
    again = cost(history((call("a"), call("mystery"))), PRICES)
    assert c == again and hash(c) == hash(again)
    assert eval(repr(c)) == c
    assert json.loads(json.dumps(c.to_dict())) == {
        "known": c.known,
        "total": None,
        "unknown": ["mystery"],
        "by_model": {"a": c.known, "mystery": None},
        "cached_calls": 0,
    }


def test_cost_rejects_a_negative_known():
    with pytest.raises(ValueError, match="known must be a finite number of dollars >= 0"):
        Cost(known=-1.0, unknown=(), by_model={})


@pytest.mark.parametrize(
    ("known", "text"),
    [
        (0.0, "$0"),
        (0.0042, "$0.0042"),
        (0.00421234, "$0.004212"),
        (0.1, "$0.1"),
        (0.123456, "$0.1235"),
        (1.5e-7, "$0.00000015"),
        (1e-12, "$0.000000000001"),
        (0.99996, "$1.00"),
        (1.0, "$1.00"),
        (12.345, "$12.35"),
        (1234.5, "$1,234.50"),
    ],
)
def test_str_formats_dollars(known, text):
    s = str(Cost(known=known, unknown=(), by_model={}))
    assert s == text
    assert "e" not in s


def test_str_with_known_and_unknown_parts():
    c = Cost(known=0.0042, unknown=("model-x", "model-y"), by_model={})
    assert str(c) == "$0.0042 + unknown (model-x, model-y)"


# -- Price ---------------------------------------------------------------------------------------
def test_price_stores_floats():
    assert Price(1, 2) == Price(1.0, 2.0)
    assert repr(Price(1, 2)) == "Price(input=1.0, output=2.0)"
    assert Price(0, 0).input == 0.0


@pytest.mark.parametrize("bad", [-0.01, math.inf, math.nan, -math.inf])
def test_price_rejects_negative_and_non_finite(bad):
    with pytest.raises(ValueError, match=r"finite number >= 0 dollars per million tokens"):
        Price(bad, 1.0)
    with pytest.raises(ValueError, match=r"Price\(output=\.\.\.\)"):
        Price(1.0, bad)


@pytest.mark.parametrize("bad", [True, "1.0", None, (1, 2)])
def test_price_rejects_non_numbers(bad):
    with pytest.raises(TypeError, match=r"Price\(input=\.\.\.\): a price must be a number"):
        Price(bad, 1.0)


# -- Prices --------------------------------------------------------------------------------------
def test_prices_is_an_immutable_mapping():
    p = Prices({"a": (1, 2)})
    assert p["a"] == Price(1, 2) and len(p) == 1 and list(p) == ["a"] and "a" in p
    assert p.price("a") == Price(1, 2)
    assert p.price("A") is None and p.price("a ") is None
    with pytest.raises(KeyError):
        p["nope"]
    with pytest.raises(TypeError):
        p["b"] = Price(0, 0)  # type: ignore[index]
    assert Prices() == Prices({}) and len(Prices()) == 0


def test_prices_equality_hash_and_repr():
    p = Prices({"a": (1, 2), "b": Price(0.5, 4)})
    assert p == PRICES and hash(p) == hash(PRICES)
    assert p != Prices({"a": (1, 2)})
    assert repr(p) == "Prices({'a': (1.0, 2.0), 'b': (0.5, 4.0)})"
    assert eval(repr(p)) == p
    assert eval(repr(DEFAULT_PRICES)) == DEFAULT_PRICES


def test_call_cost():
    assert PRICES.call_cost("a", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert PRICES.call_cost("a", 0, 0) == 0.0
    assert PRICES.call_cost("mystery", 10, 10) is None
    assert PRICES.call_cost("a", None, 10) is None
    assert PRICES.call_cost("a", 10, None) is None


def test_or_adds_and_overrides_without_touching_either_side():
    base = Prices({"a": (1, 2), "b": (3, 4)})
    new = base | {"b": (0.5, 0.5), "c": Price(9, 9)}
    assert new == Prices({"a": (1, 2), "b": (0.5, 0.5), "c": (9, 9)})
    assert base == Prices({"a": (1, 2), "b": (3, 4)})
    assert base | Prices({"a": (0, 0)}) == Prices({"a": (0, 0), "b": (3, 4)})
    assert base.override({"a": (0, 0)}) == base | {"a": (0, 0)}
    # A dict on the left: the right side wins, as with dicts.
    assert {"a": (7, 7), "z": (1, 1)} | base == Prices({"a": (1, 2), "b": (3, 4), "z": (1, 1)})
    assert isinstance(DEFAULT_PRICES | {"my-model": (0.5, 1.5)}, Prices)


def test_or_with_a_foreign_operand_says_what_is_expected():
    with pytest.raises(TypeError, match="the right side must be a Prices or a mapping"):
        PRICES | [("a", (1, 2))]  # type: ignore[operator]


def test_prices_entry_errors_state_the_rule():
    with pytest.raises(
        TypeError,
        match=r"the price of 'a' must be a moa.Price or an \(input, "
        r"output\) pair",
    ):
        Prices({"a": 1.0})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="the price of 'a' must be"):
        Prices({"a": (1, 2, 3)})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"the price of 'a': Price\(input=\.\.\.\)"):
        Prices({"a": (-1, 2)})
    with pytest.raises(TypeError, match="model names must be non-empty str"):
        Prices({"": (1, 2)})
    with pytest.raises(TypeError, match="model names must be non-empty str"):
        Prices({3: (1, 2)})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="table must be a mapping"):
        Prices([("a", (1, 2))])  # type: ignore[arg-type]


# -- Prices.from_json ----------------------------------------------------------------------------
def write(tmp_path, content: str):
    path = tmp_path / "prices.json"
    path.write_text(content, encoding="utf-8")
    return path


def test_from_json_both_entry_forms(tmp_path):
    path = write(
        tmp_path,
        json.dumps(
            {
                "pair": [0.5, 1.5],
                "object": {"input": 2, "output": 8},
                "free": [0, 0],
            }
        ),
    )
    assert Prices.from_json(path) == Prices({"pair": (0.5, 1.5), "object": (2, 8), "free": (0, 0)})
    assert Prices.from_json(str(path)) == Prices.from_json(path)


def test_from_json_overrides_the_defaults(tmp_path):
    path = write(tmp_path, '{"gpt-5": [1, 1]}')
    assert Prices.from_json(path).genai_prices is False  # a file's table is exact
    merged = DEFAULT_PRICES | Prices.from_json(path)
    assert merged.price("gpt-5") == Price(1, 1)
    assert merged.price("smollm2") == Price(0, 0)
    assert merged.genai_prices is True  # still looks up the models the file does not name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"a": [1, 2]', "not valid JSON"),
        ("[[1, 2]]", r"a price table must be a JSON object .* not a JSON list"),
        (
            '{"a": [1, -2]}',
            r"the entry 'a': Price\(output=\.\.\.\): a price must be a finite number >= 0",
        ),
        ('{"a": [1, 2, 3]}', r"the entry 'a' must be \[input, output\] or"),
        ('{"a": 1.5}', r"the entry 'a' must be \[input, output\] or"),
        ('{"a": {"input": 1}}', r"the entry 'a' must be \[input, output\] or"),
        ('{"a": {"input": 1, "output": 2, "cache": 3}}', r"the entry 'a' must be"),
        ('{"a": ["1", 2]}', r"the entry 'a': Price\(input=\.\.\.\): a price must be a number"),
        ('{"a": [true, 2]}', r"the entry 'a': Price\(input=\.\.\.\): a price must be a number"),
        ('{"a": [NaN, 2]}', r"the entry 'a': .*finite number >= 0"),
        ('{"": [1, 2]}', "model names must be non-empty"),
    ],
)
def test_from_json_errors_name_the_file_and_entry(tmp_path, content, message):
    path = write(tmp_path, content)
    with pytest.raises(ValueError, match=message) as info:
        Prices.from_json(path)
    assert str(info.value).startswith(f"{path}: ")


def test_from_json_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        Prices.from_json(tmp_path / "nope.json")


# -- the default table ---------------------------------------------------------------------------
PLACEHOLDERS = {"llama-70b", "llama-3.3-70b", "claude"}


@pytest.fixture
def no_genai_prices(monkeypatch):
    """As where genai-prices is not installed."""
    monkeypatch.setattr(_cost, "_genai_prices", lambda: None)


def _recipe_models() -> set[str]:
    names = set(recipes.PROPOSERS) | set(recipes.ROBUST_PROPOSERS)
    for recipe in (recipes.together_moa, recipes.moa_lite, recipes.self_moa, recipes.robust_moa):
        for name in ("aggregator", "model"):
            default = recipe.__kwdefaults__ or {}
            params = recipe.__defaults__ or ()
            code = recipe.__code__
            args = code.co_varnames[: code.co_argcount]
            positional = dict(zip(args[len(args) - len(params) :], params))
            if name in positional:
                names.add(positional[name])
            if name in default:
                names.add(default[name])
    return names


def test_default_prices_hold_no_dated_table():
    # Only the embedded model's $0: every other price comes from genai-prices or the user.
    assert set(DEFAULT_PRICES) == set(EMBEDDED_MODELS)
    assert all(price == Price(0, 0) for price in DEFAULT_PRICES.values())
    assert DEFAULT_PRICES.genai_prices is True
    assert isinstance(PRICES_AS_OF, str) and "genai-prices" in PRICES_AS_OF


def test_the_embedded_model_costs_nothing_by_default():
    # Regression: a run on the embedded model labelled "smollm2" cost "unknown (smollm2)".
    h = history((call("smollm2", 1000, 500), call("SmolLM2-135M-Instruct", 10, 20)))
    c = h.cost()
    assert c.complete and c.total == 0 and str(c) == "$0"
    assert c.by_model == {"SmolLM2-135M-Instruct": 0.0, "smollm2": 0.0}


def test_every_name_of_the_embedded_model_is_free():
    from moa.cli.providers import EMBEDDED_NAMES, PROVIDERS

    assert {*EMBEDDED_NAMES, PROVIDERS["local"].model} <= set(EMBEDDED_MODELS)
    for name in EMBEDDED_MODELS:
        assert DEFAULT_PRICES.call_cost(name, 10**6, 10**6) == 0.0, name


@pytest.mark.parametrize("installed", [True, False], ids=["as-installed", "no-genai-prices"])
def test_a_model_nobody_knows_stays_unknown(monkeypatch, installed):
    if not installed:
        monkeypatch.setattr(_cost, "_genai_prices", lambda: None)
    h = history((call("mystery-model-x"), call("smollm2"), *(call(m) for m in PLACEHOLDERS)))
    c = h.cost()
    assert c.unknown == tuple(sorted({"mystery-model-x", *PLACEHOLDERS}))
    assert c.known == 0 and c.total is None
    assert str(c).startswith("unknown (") and "$0" not in str(c)
    assert DEFAULT_PRICES.price("mystery-model-x") is None


def test_without_genai_prices_only_the_embedded_model_has_a_price(no_genai_prices):
    c = history((call("gpt-4o"), call("smollm2"))).cost()
    assert c.unknown == ("gpt-4o",) and str(c) == "unknown (gpt-4o)"
    assert DEFAULT_PRICES.price("gpt-4o") is None
    assert DEFAULT_PRICES.call_cost("gpt-4o", 10, 10) is None


def test_recipe_models_are_never_free_by_default():
    models = _recipe_models()
    assert {"qwen1.5-110b-chat", "qwen1.5-72b-chat", "gpt-5-nano-2025-08-07"} <= models
    for model in models:
        dollars = DEFAULT_PRICES.call_cost(model, 1000, 1000)
        assert dollars is None or dollars > 0, model


def test_import_moa_does_not_import_genai_prices():
    code = (
        "import sys, moa\n"
        "moa.DEFAULT_PRICES.price('smollm2')\n"
        "assert 'genai_prices' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- where a table looks missing models up -------------------------------------------------------
def test_genai_prices_option_errors_state_the_rule():
    with pytest.raises(TypeError, match=r"genai_prices must be True, False or a genai-prices"):
        Prices({}, genai_prices=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a provider id must be non-empty"):
        Prices({}, genai_prices="")


def test_genai_prices_option_in_equality_hash_repr_and_pickle(no_genai_prices):
    plain = Prices({"a": (1, 2)})
    looked_up = Prices({"a": (1, 2)}, genai_prices=True)
    at_groq = Prices({"a": (1, 2)}, genai_prices="groq")
    assert plain.genai_prices is False and at_groq.genai_prices == "groq"
    assert len({plain, looked_up, at_groq}) == 3 and plain != looked_up != at_groq
    assert repr(looked_up) == "Prices({'a': (1.0, 2.0)}, genai_prices=True)"
    assert repr(at_groq) == "Prices({'a': (1.0, 2.0)}, genai_prices='groq')"
    for p in (plain, looked_up, at_groq, DEFAULT_PRICES):
        assert eval(repr(p)) == p
        # moa.ray sends the table to its workers.
        assert pickle.loads(pickle.dumps(p)) == p


def test_copies_and_unions_keep_where_missing_models_are_looked_up(no_genai_prices):
    assert Prices(DEFAULT_PRICES) == DEFAULT_PRICES
    assert Prices(DEFAULT_PRICES, genai_prices=False).genai_prices is False
    assert (DEFAULT_PRICES | {"m": (0, 0)}).genai_prices is True
    assert ({"m": (0, 0)} | DEFAULT_PRICES).genai_prices is True
    assert (PRICES | {"m": (0, 0)}).genai_prices is False
    at_groq = Prices(DEFAULT_PRICES, genai_prices="groq")
    assert set(at_groq) == set(DEFAULT_PRICES)
    assert (at_groq | PRICES).genai_prices == "groq"
    # As with entries, the right side's wins where it has one.
    assert (at_groq | DEFAULT_PRICES).genai_prices is True
    assert (DEFAULT_PRICES | at_groq).genai_prices == "groq"


def test_the_mapping_holds_only_the_tables_own_entries():
    assert "gpt-4o" not in DEFAULT_PRICES and len(DEFAULT_PRICES) == len(EMBEDDED_MODELS)
    with pytest.raises(KeyError):
        DEFAULT_PRICES["gpt-4o"]


def test_costs_add_as_runs_together():
    a = Cost(0.5, (), {"m": 0.5}, cached_calls=1)
    b = Cost(0.25, ("x",), {"m": 0.25, "x": None})
    total = a + b
    assert total == a.plus(b) == Cost(0.75, ("x",), {"m": 0.75, "x": None}, cached_calls=1)
    assert sum([a, b], Cost.ZERO) == total and a + Cost.ZERO == a
    with pytest.raises(TypeError, match="other must be a Cost"):
        a + 1
