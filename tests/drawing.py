"""What the law and reference tests draw, shared: the models, moa.testing's strategies over
them, and random call delays (a test module imports this, never another test module)."""

from functools import partial

from hypothesis import strategies as st

import moa.testing as mt

MODELS = ("alpha", "beta", "gamma")

transforms = mt.transforms
llm_steps = partial(mt.llm_steps, models=MODELS)
pipelines = mt.pipelines
#: Generators for call delays. True randomness, so the number of calls (fewer when a failing
#: branch cancels its siblings) never changes what Hypothesis draws.
delay_randoms = st.randoms(use_true_random=True)


def random_delays(rng):
    """Per-call delays of up to 2 ms, so concurrent calls finish in a shuffled order."""
    return lambda model, msgs: rng.random() * 0.002
