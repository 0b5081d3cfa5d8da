"""Every wire model, in one place, shared by producers, consumers and tests."""

from axiom_shared.schemas.amadeus import (
    FlightBookInput,
    FlightBookResult,
    FlightSearchInput,
    FlightSearchResult,
    TravelClass,
    Traveler,
)
from axiom_shared.schemas.base import Lamports, Message, Pubkey, StrictModel, TxSignature, utcnow
from axiom_shared.schemas.payments import (
    FINAL_STATUSES,
    CatalogItem,
    ChangeSource,
    CreatePaymentInput,
    CreatePaymentResult,
    GetCatalogInput,
    GetCatalogResult,
    GetPaymentInput,
    GetPaymentResult,
    PaymentProvisioned,
    PaymentStatus,
    PaymentStatusChanged,
    PaymentView,
)

__all__ = [
    "FINAL_STATUSES",
    "CatalogItem",
    "ChangeSource",
    "CreatePaymentInput",
    "CreatePaymentResult",
    "FlightBookInput",
    "FlightBookResult",
    "FlightSearchInput",
    "FlightSearchResult",
    "GetCatalogInput",
    "GetCatalogResult",
    "GetPaymentInput",
    "GetPaymentResult",
    "Lamports",
    "Message",
    "PaymentProvisioned",
    "PaymentStatus",
    "PaymentStatusChanged",
    "PaymentView",
    "Pubkey",
    "StrictModel",
    "TravelClass",
    "Traveler",
    "TxSignature",
    "utcnow",
]
