"""Fixtures shared by every test tier; each plugin module lives in tests/fixtures/."""

import os

# The tests run the services on sandboxes: development, unless a test says otherwise (the
# services refuse development shortcuts, such as a default merchant wallet, anywhere else).
os.environ.setdefault("ENVIRONMENT", "development")
# Every test client is 127.0.0.1 and one test creates hundreds of payments: the per-client and
# per-account payment limits are lifted here, and the tests of those limits set their own.
os.environ.setdefault(
    "PAYMENT_RATE_LIMIT",
    '{"prefix": "/api/pay/", "methods": ["POST"], "limit": 1000000, "window": 1}',
)
os.environ.setdefault(
    "ACCOUNT_RATE_LIMIT",
    '{"prefix": "/api/pay/req/", "methods": ["POST"], "limit": 1000000, "window": 1}',
)

pytest_plugins = [
    "tests.fixtures.infra",
    "tests.fixtures.solana",
    "tests.fixtures.amadeus",
    "tests.fixtures.services",
    "tests.fixtures.system",
    "tests.fixtures.notifier",
    "tests.fixtures.js",
    "tests.fixtures.stack",
]
