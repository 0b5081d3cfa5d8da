"""The browser tier's fixtures (tests/browser/checkout_page.py)."""

from tests.browser.checkout_page import browser, checkout

__all__ = ["browser", "checkout"]
