import json
import os

import pytest

from tests.conftest import SHARED


@pytest.fixture(scope="session")
def zh_reviews():
    """The first 5,000 documents of the shared Chinese shopping reviews (real text, JSON lines)."""
    path = os.path.join(SHARED, "zh_shopping_reviews.jsonl")
    if not os.path.exists(path):
        pytest.skip("real Chinese text is not here (../shared/corpora/zh_shopping_reviews.jsonl "
                    "from the project root): a clone without the shared corpora")
    with open(path, encoding="utf-8") as f:
        return [json.loads(next(f))["text"] for _ in range(5000)]
