"""Reference data the double draws its offers from: airports, airlines, aircraft, currencies.

Small and hand-picked: enough for realistic answers on the routes the demo and tests use.
Any well-formed IATA code is accepted; codes not listed here get stable made-up geography.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Airport:
    city_code: str
    country_code: str
    latitude: float
    longitude: float


AIRPORTS: dict[str, Airport] = {
    "CDG": Airport("PAR", "FR", 49.01, 2.55),
    "ORY": Airport("PAR", "FR", 48.73, 2.36),
    "LHR": Airport("LON", "GB", 51.47, -0.45),
    "LGW": Airport("LON", "GB", 51.15, -0.19),
    "FRA": Airport("FRA", "DE", 50.03, 8.57),
    "MUC": Airport("MUC", "DE", 48.35, 11.79),
    "AMS": Airport("AMS", "NL", 52.31, 4.76),
    "MAD": Airport("MAD", "ES", 40.47, -3.56),
    "BCN": Airport("BCN", "ES", 41.30, 2.08),
    "LIS": Airport("LIS", "PT", 38.77, -9.13),
    "FCO": Airport("ROM", "IT", 41.80, 12.25),
    "ZRH": Airport("ZRH", "CH", 47.46, 8.55),
    "IST": Airport("IST", "TR", 41.26, 28.74),
    "DXB": Airport("DXB", "AE", 25.25, 55.36),
    "DOH": Airport("DOH", "QA", 25.27, 51.61),
    "CAI": Airport("CAI", "EG", 30.12, 31.41),
    "JED": Airport("JED", "SA", 21.68, 39.16),
    "RUH": Airport("RUH", "SA", 24.96, 46.70),
    "JFK": Airport("NYC", "US", 40.64, -73.78),
    "EWR": Airport("NYC", "US", 40.69, -74.17),
    "BOS": Airport("BOS", "US", 42.36, -71.01),
    "SFO": Airport("SFO", "US", 37.62, -122.38),
    "LAX": Airport("LAX", "US", 33.94, -118.41),
    "ORD": Airport("CHI", "US", 41.98, -87.90),
    "SYD": Airport("SYD", "AU", -33.95, 151.18),
    "BKK": Airport("BKK", "TH", 13.69, 100.75),
    "SIN": Airport("SIN", "SG", 1.36, 103.99),
    "NRT": Airport("TYO", "JP", 35.77, 140.39),
}

# code -> (name, hub airport)
CARRIERS: dict[str, tuple[str, str]] = {
    "AF": ("AIR FRANCE", "CDG"),
    "KL": ("KLM ROYAL DUTCH AIRLINES", "AMS"),
    "LH": ("LUFTHANSA", "FRA"),
    "BA": ("BRITISH AIRWAYS", "LHR"),
    "IB": ("IBERIA", "MAD"),
    "TP": ("TAP PORTUGAL", "LIS"),
    "LX": ("SWISS INTERNATIONAL AIR LINES", "ZRH"),
    "TK": ("TURKISH AIRLINES", "IST"),
    "EK": ("EMIRATES", "DXB"),
    "QR": ("QATAR AIRWAYS", "DOH"),
    "MS": ("EGYPTAIR", "CAI"),
    "SV": ("SAUDI ARABIAN AIRLINES", "JED"),
    "UA": ("UNITED AIRLINES", "EWR"),
    "DL": ("DELTA AIR LINES", "JFK"),
    "SQ": ("SINGAPORE AIRLINES", "SIN"),
}

NARROW_BODY = ("320", "321", "32N", "738", "7M8", "E90")
WIDE_BODY = ("333", "359", "388", "77W", "789")
AIRCRAFT: dict[str, str] = {
    "320": "AIRBUS A320",
    "321": "AIRBUS A321",
    "32N": "AIRBUS A320NEO",
    "738": "BOEING 737-800",
    "7M8": "BOEING 737 MAX 8",
    "E90": "EMBRAER 190",
    "333": "AIRBUS A330-300",
    "359": "AIRBUS A350-900",
    "388": "AIRBUS A380-800",
    "77W": "BOEING 777-300ER",
    "789": "BOEING 787-9",
}

# Fixed rates from EUR, so that a price in any currency is reproducible.
CURRENCIES: dict[str, tuple[str, Decimal]] = {
    "EUR": ("EURO", Decimal("1")),
    "USD": ("US DOLLAR", Decimal("1.08")),
    "GBP": ("POUND STERLING", Decimal("0.85")),
    "CHF": ("SWISS FRANC", Decimal("0.95")),
    "SAR": ("SAUDI RIYAL", Decimal("4.05")),
    "AED": ("UAE DIRHAM", Decimal("3.97")),
    "EGP": ("EGYPTIAN POUND", Decimal("52.10")),
    "TRY": ("TURKISH LIRA", Decimal("37.20")),
    "JPY": ("YEN", Decimal("163")),
    "AUD": ("AUSTRALIAN DOLLAR", Decimal("1.64")),
    "SGD": ("SINGAPORE DOLLAR", Decimal("1.45")),
    "THB": ("BAHT", Decimal("38.50")),
}


def stable_int(*parts: object) -> int:
    """A process-independent integer from the parts (Python's hash() is salted per process)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def airport(code: str) -> Airport:
    known = AIRPORTS.get(code)
    if known is not None:
        return known
    seed = stable_int("airport", code)
    return Airport(code, "ZZ", (seed % 1200) / 10 - 60, (seed // 1200 % 3600) / 10 - 180)


def distance_km(origin: str, destination: str) -> float:
    """Great-circle distance; never under 250 km so that every flight looks like one."""
    a, b = airport(origin), airport(destination)
    lat1, lat2 = math.radians(a.latitude), math.radians(b.latitude)
    dlat, dlon = lat2 - lat1, math.radians(b.longitude - a.longitude)
    h = math.sin(dlat / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(dlon / 2) ** 2
    return max(250.0, 2 * 6371 * math.asin(math.sqrt(h)))
