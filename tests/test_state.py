"""What scanctl remembers between runs: the rate it learned, and bans."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
import respx
from typer.testing import CliRunner

from scanctl.cli import app
from scanctl.ratecontrol import LearnedPace
from scanctl.state import PacingMemory

# respx routes, served over a socket to the default transport (tests/respx_bridge.py).
pytestmark = pytest.mark.usefixtures("respx_over_aiohttp")

BASE = "http://upstream.test"


def state_file() -> Path:
    return Path(os.environ["SCANCTL_STATE_DIR"]) / "pacing.json"


def test_learned_rates_and_bans_round_trip_through_the_file() -> None:
    memory = PacingMemory()
    memory.remember(BASE, "mss", LearnedPace(48.5, 52.0), now_wall=1000.0)
    signals = LearnedPace(119.0, 124.0, burst=10, gate_enough=0.12)
    memory.remember(BASE, "signals", signals, now_wall=1000.0)
    memory.remember_ban(BASE, until_wall=2000.0)
    memory.save()
    again = PacingMemory()
    assert again.learned(BASE, "mss") == LearnedPace(48.5, 52.0)
    assert again.learned(BASE, "signals") == signals
    assert again.learned(BASE, "price") is None
    assert again.banned_until(BASE, now_wall=1500.0) == 2000.0
    assert again.banned_until(BASE, now_wall=2500.0) is None


def test_a_bad_burst_costs_only_the_burst_not_the_learned_rate() -> None:
    memory = PacingMemory()
    for bad in (1e999, "1e3", None, [3]):
        memory.data = {"rates": {f"{BASE} mss": {"rate": 40.0, "burst": bad}}}
        assert memory.learned(BASE, "mss") == LearnedPace(40.0)


def test_a_bad_gate_length_is_unknown_not_an_error() -> None:
    memory = PacingMemory()
    for bad in (-1, "0.1", True, 1e9, [0.1]):
        memory.data = {"rates": {f"{BASE} mss": {"rate": 40.0, "gate_enough": bad}}}
        assert memory.learned(BASE, "mss") == LearnedPace(40.0)


def test_a_corrupt_state_file_is_set_aside_with_a_warning(capsys) -> None:  # type: ignore[no-untyped-def]
    state_file().parent.mkdir(parents=True, exist_ok=True)
    state_file().write_text("{not json")
    memory = PacingMemory()
    assert memory.learned(BASE, "mss") is None
    assert "ignoring unreadable state file" in capsys.readouterr().err
    assert state_file().with_suffix(".json.corrupt").exists()


def test_a_scan_that_met_429s_leaves_its_rate_for_the_next_run() -> None:
    runner = CliRunner()
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"})])

    def answer(request: httpx.Request) -> httpx.Response:
        return next(answers, httpx.Response(200, json={"ok": True}))

    with respx.mock(base_url=BASE) as mock:
        mock.get(path__regex=r"^/").mock(side_effect=answer)
        first = runner.invoke(app, ["scan", "BTC", "ETH", "--base-url", BASE, "-t", "mss"])
        assert first.exit_code == 0, first.stderr
        saved = json.loads(state_file().read_text())["rates"][f"{BASE} mss"]
        assert saved["rate"] > 0
        second = runner.invoke(app, ["scan", "SOL", "--base-url", BASE, "-t", "mss"])
    history = json.loads(second.stdout)["rate_history"]
    assert history[0]["reason"] == "learned on an earlier run"
    assert history[0]["rate"] == round(saved["rate"], 2)


def test_a_418_ban_is_kept_and_no_later_run_sends_until_it_passes() -> None:
    runner = CliRunner()
    with respx.mock(base_url=BASE) as mock:
        route = mock.get(path__regex=r"^/").respond(
            418, headers={"Retry-After": "600"}, json={"detail": "IP banned"}
        )
        first = runner.invoke(app, ["scan", "BTC", "--base-url", BASE])
        assert first.exit_code == 4 and route.call_count == 1
        second = runner.invoke(app, ["scan", "BTC", "--base-url", BASE])
    assert second.exit_code == 4 and route.call_count == 1  # nothing sent the second time
    assert "banned us until" in second.stderr and second.stdout == ""


def test_relearn_ignores_what_was_learned_and_no_adapt_learns_nothing() -> None:
    runner = CliRunner()
    memory = PacingMemory()
    memory.remember(BASE, "signals", LearnedPace(7.0, 9.0), now_wall=1000.0)
    memory.save()
    with respx.mock(base_url=BASE) as mock:
        mock.get(path__regex=r"^/").respond(200, json={"ok": True})
        learned = runner.invoke(app, ["scan", "BTC", "--base-url", BASE, "-t", "signals"])
        relearn = runner.invoke(
            app, ["scan", "BTC", "--base-url", BASE, "-t", "signals", "--relearn"]
        )
        fixed = runner.invoke(
            app,
            ["scan", "ETH", "--base-url", BASE, "-t", "price", "--no-adapt", "--rate", "5"],
        )
    assert json.loads(learned.stdout)["rate_history"][0]["rate"] == 7.0
    assert json.loads(relearn.stdout)["rate_history"] == []
    assert fixed.exit_code == 0
    assert json.loads(fixed.stdout)["performance"]["final_rate_limit"] == 5.0
    assert f"{BASE} price" not in state_file().read_text()


def test_runs_saving_at_once_keep_each_others_entries() -> None:
    """Each run read the file at its start; the last to save must not drop the others'."""
    memory = PacingMemory()
    memory.remember(BASE, "price", LearnedPace(5.0), now_wall=900.0)
    memory.save()
    first, second = PacingMemory(), PacingMemory()
    first.remember(BASE, "mss", LearnedPace(48.5, 52.0), now_wall=1000.0)
    first.remember_ban(BASE, until_wall=5000.0)
    second.remember(BASE, "signals", LearnedPace(119.0), now_wall=1001.0)
    second.remember_ban(BASE, until_wall=3000.0)  # (the longer ban stays)
    first.save()
    second.save()
    again = PacingMemory()
    assert again.learned(BASE, "price") == LearnedPace(5.0)
    assert again.learned(BASE, "mss") == LearnedPace(48.5, 52.0)
    assert again.learned(BASE, "signals") == LearnedPace(119.0)
    assert again.banned_until(BASE, now_wall=4000.0) == 5000.0


def test_many_saves_racing_lose_no_entry() -> None:
    import threading

    runs = [PacingMemory() for _ in range(12)]
    for n, memory in enumerate(runs):
        memory.remember(BASE, f"type{n}", LearnedPace(10.0 + n), now_wall=1000.0)
    start = threading.Barrier(len(runs))

    def save(memory: PacingMemory) -> None:
        start.wait()
        memory.save()

    threads = [threading.Thread(target=save, args=(m,)) for m in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    rates = json.loads(state_file().read_text())["rates"]
    assert sorted(rates) == sorted(f"{BASE} type{n}" for n in range(len(runs)))
    assert not list(state_file().parent.glob(".pacing.*"))  # no temp file left behind
