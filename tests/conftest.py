import pytest

from moa import Retry

#: No waiting between retries, so fault tests run in milliseconds.
FAST = Retry(attempts=3, initial=0, max_wait=0, jitter=0)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param
