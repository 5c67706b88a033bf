"""The store contract, run against every backend (memory, SQLite, Redis)."""

from __future__ import annotations

from scanctl.cache.memory_store import LayeredStore, MemoryStore
from scanctl.cache.store import RUNS_KEPT, CacheKey, CacheStore, Entry, xfetch_due

NOW = 1_800_000_000.0


def key(symbol: str, type_name: str = "mss", ns: str = "p http://a") -> CacheKey:
    return CacheKey(ns, type_name, symbol)


def entry(symbol: str, *, age: float = 0.0, ttl: float = 60.0, status: int = 200, **kw) -> Entry:  # type: ignore[no-untyped-def]
    data = (
        None
        if status != 200
        else {"symbol": symbol, "score": len(symbol), "nested": [1, {"a": None}]}
    )
    error = None if status == 200 else f"HTTP {status}: No data for {symbol}"
    return Entry(key(symbol, **kw), status, data, error, NOW - age, ttl, 0.25)


def test_entries_round_trip_and_missing_keys_are_absent(any_store: CacheStore) -> None:
    stored = [entry("BTC"), entry("ZZX", status=404), entry("ETH", type_name="price")]
    any_store.set_many(stored)
    found = any_store.get_many([key("BTC"), key("ZZX"), key("ETH", "price"), key("NOPE")])
    assert found == {e.key: e for e in stored}
    assert found[key("ZZX")].ok is False and found[key("BTC")].data["nested"] == [1, {"a": None}]


def test_bulk_reads_cover_more_keys_than_one_query_chunk(any_store: CacheStore) -> None:
    many = [entry(f"S{i:04d}") for i in range(1200)]
    any_store.set_many(many)
    keys = [e.key for e in many] + [key("ABSENT")]
    assert len(any_store.get_many(keys)) == 1200


def test_a_write_replaces_the_entry(any_store: CacheStore) -> None:
    any_store.set_many([entry("BTC", age=100)])
    any_store.set_many([entry("BTC", age=1)])
    assert any_store.get_many([key("BTC")])[key("BTC")].fetched_at == NOW - 1


def test_one_lease_per_key_renewable_by_its_owner_and_free_once_expired(
    any_store: CacheStore,
) -> None:
    k = key("BTC")
    assert any_store.claim(k, "a", 30, 0.0, NOW).granted
    assert not any_store.claim(k, "b", 30, 0.0, NOW + 1).granted
    assert any_store.claim(k, "a", 30, 0.0, NOW + 1).granted  # renewal
    assert any_store.claim(key("ETH"), "b", 30, 0.0, NOW).granted  # other keys are free
    if any_store.backend == "redis":
        return  # Redis expires leases on its own clock; the expiry is checked below
    assert any_store.claim(k, "b", 30, 0.0, NOW + 32).granted  # a's lease ran out


def test_storing_releases_the_owners_lease_and_answers_waiting_claims(
    any_store: CacheStore,
) -> None:
    k = key("BTC")
    assert any_store.claim(k, "a", 30, 0.0, NOW).granted
    any_store.set_many([entry("BTC")], owner="a")
    claim = any_store.claim(k, "b", 30, 0.0, NOW + 1)
    assert not claim.granted and claim.entry is not None and claim.entry.data["symbol"] == "BTC"
    # An entry no newer than the one the claimant chose to refresh does not answer it.
    assert any_store.claim(k, "b", 30, NOW, NOW + 1).granted


def test_release_frees_only_the_owners_lease(any_store: CacheStore) -> None:
    assert any_store.claim(key("BTC"), "a", 30, 0.0, NOW).granted
    any_store.release([key("BTC")], "b")
    assert not any_store.claim(key("BTC"), "b", 30, 0.0, NOW).granted
    any_store.release([key("BTC")], "a")
    assert any_store.claim(key("BTC"), "b", 30, 0.0, NOW).granted


def test_invalidate_by_type_and_age(any_store: CacheStore) -> None:
    any_store.set_many(
        [entry("A", age=500), entry("B", age=5), entry("C", age=500, type_name="price")]
    )
    assert any_store.invalidate(type_name="price") == 1
    assert any_store.invalidate(older_than=NOW - 100) == 1
    assert list(any_store.get_many([key("A"), key("B"), key("C", "price")])) == [key("B")]
    assert any_store.invalidate() == 1


def test_stats_count_entries_by_type_and_freshness(any_store: CacheStore) -> None:
    any_store.set_many(
        [
            entry("A"),
            entry("B", age=120),
            entry("ZZ", status=404, ttl=30),
            entry("P", type_name="price", age=61),
        ]
    )
    stats = any_store.stats(NOW + 1)
    mss, price = stats.by_type["mss"], stats.by_type["price"]
    assert (mss.fresh, mss.expired, mss.negative, mss.total) == (2, 1, 1, 3)
    assert (price.fresh, price.expired) == (0, 1)
    if stats.size_bytes is not None:
        assert stats.size_bytes > 0


def test_runs_are_kept_newest_first_and_capped(any_store: CacheStore) -> None:
    for i in range(RUNS_KEPT + 5):
        any_store.add_run({"n": i})
    runs = any_store.runs()
    assert len(runs) == RUNS_KEPT and runs[0] == {"n": RUNS_KEPT + 4}
    assert any_store.runs(2) == [{"n": RUNS_KEPT + 4}, {"n": RUNS_KEPT + 3}]


def test_prune_drops_entries_expired_longer_than_the_retention(any_store: CacheStore) -> None:
    any_store.set_many([entry("OLD", age=10_000, ttl=60), entry("NEW", age=10, ttl=60)])
    removed = any_store.prune(NOW, retention=3600)
    if any_store.backend != "redis":  # Redis expires entries itself (TTL + retention)
        assert removed == 1
        assert list(any_store.get_many([key("OLD"), key("NEW")])) == [key("NEW")]


def test_the_memory_store_is_a_bounded_lru() -> None:
    store = MemoryStore(max_entries=2)
    store.set_many([entry("A"), entry("B")])
    store.get_many([key("A")])  # A is now the most recently used
    store.set_many([entry("C")])
    assert set(store.get_many([key("A"), key("B"), key("C")])) == {key("A"), key("C")}


def test_the_memory_layer_answers_fresh_entries_and_reads_through_the_rest() -> None:
    shared = MemoryStore()
    now = [NOW]
    layered = LayeredStore(shared, clock=lambda: now[0])
    layered.set_many([entry("A", ttl=60)])
    shared.set_many([entry("A", ttl=60, age=-5)])  # another process refreshed it
    assert layered.get_many([key("A")])[key("A")].fetched_at == NOW  # fresh in memory
    now[0] = NOW + 61  # expired in memory: read through, and see the refresh
    assert layered.get_many([key("A")])[key("A")].fetched_at == NOW + 5


def test_xfetch_refreshes_only_near_expiry_and_more_often_the_nearer() -> None:
    e = entry("A", ttl=300)  # fetched at NOW, expires at NOW + 300, cost floored to 1 s
    assert not xfetch_due(e, NOW + 10, draw=0.01)  # far from expiry: never
    assert xfetch_due(e, NOW + 299.5, draw=0.5)  # half a second left: -ln(0.5) = 0.69 s
    assert not xfetch_due(e, NOW + 299.0, draw=0.5)
    assert xfetch_due(e, NOW + 296.0, draw=0.01)  # an unlucky draw refreshes 4.6 s early
    assert xfetch_due(e, NOW + 300, draw=1.0)  # expired: always
