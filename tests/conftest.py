"""Fixtures shared by every test tier; each plugin module lives in tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.infra",
    "tests.fixtures.solana",
    "tests.fixtures.amadeus",
    "tests.fixtures.services",
    "tests.fixtures.system",
    "tests.fixtures.notifier",
]
