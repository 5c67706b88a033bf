"""Deterministic, plausible answers of the analysis API, per symbol and type.

The same symbol and type always give the same answer (seeded from a hash of both), so tests and
recipes can rely on values without hard-coding them. An answer moves only when its `version`
does (the upstream's `--move-every` / `POST /_demo/move`), to a new answer just as stable;
version 0 is the answer it has always given; and the JSON has the shape the real
CryptoSatX routes return: top-level scalars (score, signal, confidence, price...) that CSV turns
into columns, and a nested object that it leaves out.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Any

Payload = dict[str, Any]


def _rng(kind: str, symbol: str, version: int = 0) -> random.Random:
    seed = f"{kind}:{symbol}" if version == 0 else f"{kind}:{symbol}:{version}"
    digest = hashlib.sha256(seed.encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def phase(symbol: str) -> float:
    """Where in a cycle of moves this symbol's answer moves, in [0, 1): symbols move in turn."""
    digest = hashlib.sha256(f"phase:{symbol}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _price(symbol: str, version: int = 0) -> float:
    """A stable price per symbol, spread over many orders of magnitude like real coins."""
    rng = _rng("price", symbol, version)
    return round(10 ** rng.uniform(-4, 4.8), 6)


def smart_money(symbol: str, version: int = 0) -> Payload:
    rng = _rng("smart_money", symbol, version)
    score = round(rng.uniform(0, 100), 1)
    signal = "accumulation" if score > 60 else "distribution" if score < 40 else "neutral"
    return {
        "symbol": symbol,
        "score": score,
        "signal": signal,
        "confidence": round(rng.uniform(0.3, 0.99), 2),
        "whale_netflow_usd": round(rng.gauss(0, 2e6), 2),
        "exchange_netflow_usd": round(rng.gauss(0, 5e6), 2),
        "wallets": {"whales": rng.randint(0, 400), "smart": rng.randint(0, 120)},
    }


def mss(symbol: str, version: int = 0) -> Payload:
    rng = _rng("mss", symbol, version)
    score = round(rng.uniform(0, 100), 1)
    return {
        "symbol": symbol,
        "score": score,
        "tier": "gem"
        if score > 80
        else "strong"
        if score > 65
        else "watch"
        if score > 45
        else "weak",
        "phase": rng.choice(["discovery", "confirmation", "validation"]),
        "confidence": round(rng.uniform(0.3, 0.99), 2),
        "alert_sent": False,
        "components": {
            "tokenomics": round(rng.uniform(0, 100), 1),
            "social": round(rng.uniform(0, 100), 1),
            "whales": round(rng.uniform(0, 100), 1),
        },
    }


def signals(symbol: str, version: int = 0) -> Payload:
    rng = _rng("signals", symbol, version)
    score = round(rng.uniform(0, 100), 1)
    signal = "LONG" if score > 60 else "SHORT" if score < 40 else "NEUTRAL"
    return {
        "symbol": symbol,
        "signal": signal,
        "score": score,
        "confidence": round(rng.uniform(0.3, 0.99), 2),
        "price": _price(symbol, version),
        "reasons": rng.sample(
            ["funding flip", "OI surge", "whale buys", "breakout", "RSI divergence", "volume"], 3
        ),
    }


def quote(symbol: str, version: int = 0) -> Payload:
    rng = _rng("quote", symbol, version)
    price = _price(symbol, version)
    spread = price * rng.uniform(0.0001, 0.002)
    return {
        "symbol": symbol,
        "exchange": "BINANCE",
        "price": price,
        "bid": round(price - spread / 2, 8),
        "ask": round(price + spread / 2, 8),
        "volume_24h": round(10 ** rng.uniform(4, 10), 2),
        "change_24h_pct": round(rng.gauss(0, 4), 2),
    }


# Route template -> payload builder: the four routes of the real API.
ROUTES: dict[str, Callable[[str, int], Payload]] = {
    "/smart-money/analyze/{symbol}": smart_money,
    "/mss/analyze/{symbol}": mss,
    "/signals/{symbol}": signals,
    "/coinapi/quote/{symbol}": quote,
}


def is_unknown(symbol: str) -> bool:
    """Symbols starting with ZZ have no data: the API answers 404 for them."""
    return symbol.upper().startswith("ZZ")
