"""The catalogue: what can be bought and at what price. Prices come from here alone, never
from a request (DESIGN.md: the server alone sets prices)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from axiom_shared.schemas import CatalogItem


class CatalogError(ValueError):
    pass


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    items: list[CatalogItem]

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalog:
        ids = [item.order_id for item in self.items]
        if len(ids) != len(set(ids)):
            raise ValueError("order_id values must be unique")
        if not ids:
            raise ValueError("the catalogue is empty")
        return self

    def get(self, order_id: str) -> CatalogItem | None:
        return next((item for item in self.items if item.order_id == order_id), None)


def load_catalog(path: str | None) -> Catalog:
    """Read `CATALOG_PATH`, or the catalogue shipped with the service when unset."""
    try:
        if path:
            text = Path(path).read_text(encoding="utf-8")
        else:
            text = (files("axiom_payments") / "default_catalog.json").read_text(encoding="utf-8")
        return Catalog.model_validate_json(text)
    except (OSError, ValidationError) as exc:
        raise CatalogError(f"invalid catalogue {path or '(default)'}: {exc}") from exc
