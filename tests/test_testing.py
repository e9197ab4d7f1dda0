"""moa.testing itself: its strategies, check_laws' tests and names, misuse, and that only it
imports Hypothesis."""

import subprocess
import sys
import textwrap

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import moa
import moa.testing as mt
from moa import Dropout, Filter, Map, Propose, Rank, Refine, Sample, Shuffle, Take, transform
from moa.testing import (
    LawViolation,
    check_laws,
    deterministic_under_seed,
    fuses,
    identity_at,
    length_bound,
    permutation,
    sub_multiset,
)

FEW = settings(max_examples=30, deadline=None)


def test_public_surface_is_exactly_all():
    public = {n for n in dir(mt) if not n.startswith("_")} - {"laws", "strategies"}
    assert public == set(mt.__all__)
    assert list(mt.__all__) == sorted(mt.__all__)


def test_import_moa_does_not_import_hypothesis():
    code = "import sys, moa; assert 'hypothesis' not in sys.modules, 'moa imported hypothesis'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_moa_testing_without_hypothesis_says_how_to_install_it():
    code = textwrap.dedent("""
        import sys
        sys.modules["hypothesis"] = None
        try:
            import moa.testing
        except ImportError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "moa.testing needs Hypothesis: pip install 'moa-dsl[testing]'"


# -- strategies take a value or a strategy -----------------------------------------------------
@FEW
@given(mt.responses(texts=["x", "y"], min_size=1, max_size=3))
def test_responses_sample_a_list_of_texts(xs):
    assert 1 <= len(xs) <= 3 and set(xs) <= {"x", "y"}


@FEW
@given(mt.transforms(kinds=[Take, Sample], n=3), mt.transforms(kinds=[Dropout], rate=st.just(0.5)))
def test_transforms_take_values_or_strategies(step, dropout):
    assert step in (Take(3), Sample(3)) and dropout == Dropout(0.5)


@FEW
@given(mt.transforms())
def test_transforms_are_the_six_built_ins(step):
    assert type(step) in (Shuffle, Dropout, Sample, Take, Filter, Map)


@FEW
@given(mt.pipelines([Take(1), Shuffle()], max_leaves=4))
def test_pipelines_of_given_steps(p):
    assert set(repr(p).replace("(", " ").replace(")", " ").split()) <= {
        "Take",
        "1",
        "Shuffle",
        "|",
        "&",
        "Pipeline",
    }


@FEW
@given(mt.llm_steps(models=["m"], kinds=[Rank, Refine], options=True))
def test_llm_steps_of_given_kinds_and_models(step):
    assert type(step) in (Rank, Refine) and "'m'" in repr(step)


@FEW
@given(mt.prompts(), mt.seeds())
def test_prompts_run_and_seeds_seed(prompt, seed):
    assert prompt.strip() and 0 <= seed < 2**64


def test_strategies_refuse_unknown_kinds():
    with pytest.raises(ValueError, match=r"transforms\(kinds=\.\.\.\): kinds must be some of"):
        mt.transforms(kinds=[Propose])
    with pytest.raises(ValueError, match=r"llm_steps\(kinds=\.\.\.\): kinds must be some of"):
        mt.llm_steps(kinds=[Take])


async def ask(client, model, content):
    text, _, _ = await client(
        model=model, messages=[{"role": "user", "content": content}], temp=0.0, max_tokens=8
    )
    return text


@FEW
@given(
    mt.scripted_clients(texts=["A", "B"], delay=0.001),
    st.sampled_from(["m", "n"]),
    st.text(max_size=5),
)
def test_a_scripted_clients_text_is_fixed_per_model_and_call(client, model, content):
    first = anyio.run(ask, client, model, content)
    assert first in ("A", "B")
    assert anyio.run(ask, client.fresh(), model, content) == first


@FEW
@given(mt.scripted_clients(transient=1, permanent=st.just(["bad"])))
def test_scripted_clients_fail_as_told(client):
    with pytest.raises(mt.Transient):
        anyio.run(ask, client, "ok", "hi")
    anyio.run(ask, client, "ok", "hi")
    with pytest.raises(mt.Permanent):
        anyio.run(ask, client.fresh(), "bad", "hi")
    assert "transient=1" in repr(client) and "permanent=['bad']" in repr(client)


# -- check_laws ----------------------------------------------------------------------------------
@transform
def truncate(responses, rng, limit):
    return [r[:limit] for r in responses]


@pytest.mark.parametrize(
    "subject, options, names",
    [
        (Shuffle(), {}, ["test_shuffle_permutation"]),
        (Dropout(0.5), {}, ["test_dropout_0_5_permutation"]),
        (
            Propose(["a", "b"]) | Rank("judge", n=2),
            {},
            ["test_propose_a_b_rank_judge_n_2_permutation"],
        ),
        (Dropout, {"params": 0.0}, ["test_dropout_permutation"]),
        (truncate, {"params": 3}, ["test_truncate_permutation"]),
        (mt.transforms(kinds=[Shuffle]), {"name": "shuffles"}, ["test_shuffles_permutation"]),
    ],
)
def test_check_laws_names_a_test_after_the_step_and_the_law(subject, options, names):
    assert list(check_laws(subject, [permutation], namespace={}, **options)) == names


def test_check_laws_defines_its_tests_in_the_calling_module():
    namespace = {"__name__": "test_somewhere"}
    exec(
        "from moa import Take\nfrom moa.testing import check_laws, sub_multiset\n"
        "check_laws(Take(2), [sub_multiset])",
        namespace,
    )
    test = namespace["test_take_2_sub_multiset"]
    assert (test.__name__, test.__module__, test.__doc__) == (
        "test_take_2_sub_multiset",
        "test_somewhere",
        sub_multiset.__doc__,
    )
    test()


def test_check_laws_refuses_what_would_make_unclear_tests():
    namespace = {}
    check_laws(Shuffle(), [permutation], namespace=namespace)
    with pytest.raises(ValueError, match="test_shuffle_permutation is defined already"):
        check_laws(Shuffle(), [permutation], namespace=namespace)
    with pytest.raises(ValueError, match="defined already; give this check_laws"):
        check_laws(Take(1), [length_bound(), length_bound(min)], namespace={})
    with pytest.raises(
        TypeError,
        match=r"length_bound takes its parameter first, as in "
        r"length_bound\(\.\.\.\)",
    ):
        check_laws(Take(1), [length_bound], namespace={})
    with pytest.raises(TypeError, match="is not a law; make one with @moa.testing.law"):
        check_laws(Take(1), [len], namespace={})
    with pytest.raises(TypeError, match=r"check_laws\(strategy, \.\.\.\): name the tests"):
        check_laws(mt.transforms(), [permutation], namespace={})
    with pytest.raises(TypeError, match=r"check_laws\(<lambda>, \.\.\.\): name the tests"):
        check_laws(lambda n: Take(n), [permutation], params=1, namespace={})


def test_pytest_k_selects_one_law(tmp_path):
    (tmp_path / "test_longest.py").write_text(
        textwrap.dedent("""
        from hypothesis import strategies as st
        from moa import Take
        from moa.testing import check_laws, fuses, idempotent, sub_multiset

        check_laws(Take, [sub_multiset, idempotent, fuses(min)], params=st.integers(0, 4),
                   max_examples=10)
    """)
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-k",
            "fuses",
            "-v",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "test_longest.py::test_take_fuses PASSED" in out.stdout
    assert "1 passed, 2 deselected" in out.stdout


# -- laws used wrongly say how to use them -------------------------------------------------------
def test_laws_that_need_a_factory_say_so():
    with pytest.raises(
        TypeError,
        match=r"the law identity_at needs a factory, e.g. "
        r"check_laws\(Dropout, \[identity_at\(0\)\]\)",
    ):
        identity_at(0)(Dropout(0))
    with pytest.raises(TypeError, match="the law fuses draws parameters for Take: pass params="):
        fuses(min)(Take)
    with pytest.raises(TypeError, match=r"the law fuses needs a factory and its parameters"):
        fuses(min)(Take(1))
    with pytest.raises(TypeError, match="the law permutation draws parameters for Take"):
        permutation(Take)
    with pytest.raises(
        TypeError,
        match=r"permutation\(params=\.\.\.\): params are the arguments "
        r"of a factory, and Shuffle\(\) is not one",
    ):
        permutation(Shuffle(), params=1)


def test_laws_are_named_functions_stating_themselves_in_one_line():
    laws = [
        mt.permutation,
        mt.sub_multiset,
        mt.order_preserving,
        mt.never_empty,
        mt.length_bound(),
        mt.deterministic_under_seed,
        mt.idempotent,
        mt.identity_at(0),
        mt.commutes_with_map,
        mt.fuses(min),
        mt.equivalent_to(Take(1)),
    ]
    for law in laws:
        assert law.__doc__ and "\n" not in law.__doc__ and law.__doc__.endswith(".")
        assert law.__name__.isidentifier()
    with pytest.raises(TypeError, match="state the law in a one-line docstring"):
        mt.law(lambda case: None)


def test_laws_run_strategies_of_steps_and_pipelines_with_llm_steps():
    permutation(mt.transforms(kinds=[Shuffle]), max_examples=20)
    sub_multiset(
        st.lists(mt.transforms(kinds=[Shuffle, Take, Sample, Dropout])).map(
            lambda steps: moa.Pipeline(*steps)
        ),
        max_examples=20,
    )
    deterministic_under_seed(mt.pipelines(mt.transforms() | mt.llm_steps()), max_examples=20)


def test_a_drawn_step_that_breaks_a_law_is_named_in_the_message():
    with pytest.raises(
        LawViolation,
        match=r"^Shuffle\(\) & Shuffle\(\) breaks the law "
        r"sub_multiset",
    ):
        sub_multiset(mt.pipelines(Shuffle()))


def test_assert_equivalent_shows_both_sides():
    mt.assert_equivalent(Take(2) | Take(3), Take(2))
    with pytest.raises(LawViolation) as info:
        mt.assert_equivalent(Take(2) | Shuffle(), Shuffle() | Take(2))
    message = str(info.value)
    assert message.startswith(
        "these pipelines differ:\n  p = Take(2) | Shuffle()\n  q = Shuffle() | Take(2)\n"
    )
    assert "inputs:" in message and "seed:" in message


def test_the_scripted_client_still_serves_the_suite():
    from scripted import Permanent, ScriptedClient, Transient, default_reply

    assert (ScriptedClient, Transient, Permanent, default_reply) == (
        mt.ScriptedClient,
        mt.Transient,
        mt.Permanent,
        mt.default_reply,
    )
    assert moa.run_sync(Propose(["m"]), "Q?", ScriptedClient())[0] == default_reply(
        "m", [{"role": "user", "content": "Q?"}]
    )
