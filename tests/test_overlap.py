"""Runs that overlap (cron): each knows whether others sent to the same upstream meanwhile, and
a run that only found its share of the limit never lowers the rate the next run starts from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx
from typer.testing import CliRunner

from scanctl.cli import app
from scanctl.overlap import RunRegistry, pid_alive
from scanctl.ratecontrol import LearnedPace
from scanctl.state import PacingMemory, pace_entry, parse_pace, shared_pace, state_dir

BASE = "http://upstream.test"
KEY = f"{BASE} signals"


class Wall:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def registry(
    directory: Path, wall: Wall, *, key: str = KEY, pid: int | None = None, alive: bool = True
) -> RunRegistry:
    return RunRegistry(key, directory, wall=wall, pid=pid, alive=lambda _pid: alive)


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def json_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.json"))


# -- the registry ------------------------------------------------------------------------------


def test_two_runs_on_one_state_dir_see_each_other_and_clean_up(tmp_path: Path) -> None:
    wall = Wall()
    one, two = registry(tmp_path, wall), registry(tmp_path, wall)
    one.start()
    two.start()
    assert len(json_files(tmp_path)) == 2
    assert not one.overlapped and not two.overlapped  # neither has sent anything yet
    wall.now += 0.5
    one.beat(10.0, sending=True)  # the other has not sent yet: no overlap so far
    two.beat(12.0, sending=True)
    assert two.overlapped and not one.overlapped
    wall.now += 0.5
    one.beat(10.0, sending=True)
    assert one.overlapped
    one.finish(10.0, sending=True)
    two.finish(12.0, sending=True)
    assert list(tmp_path.iterdir()) == []


def test_runs_against_another_upstream_or_type_do_not_count(tmp_path: Path) -> None:
    wall = Wall()
    ours = registry(tmp_path, wall)
    other_type = registry(tmp_path, wall, key=f"{BASE} mss")
    other_host = registry(tmp_path, wall, key="http://elsewhere.test signals")
    for run in (ours, other_type, other_host):
        run.start()
        run.beat(5.0, sending=True)
    ours.beat(5.0, sending=True)
    ours.finish(5.0, sending=True)
    assert not ours.overlapped


def test_a_run_that_sends_nothing_is_no_overlap(tmp_path: Path) -> None:
    """A run answered entirely from the cache shares no limit with anyone."""
    wall = Wall()
    scanning, cached = registry(tmp_path, wall), registry(tmp_path, wall)
    scanning.start()
    cached.start()
    for _ in range(3):
        wall.now += 0.5
        scanning.beat(20.0, sending=True)
        cached.beat(0.0, sending=False)
    cached.finish(0.0, sending=False)
    scanning.finish(20.0, sending=True)
    assert not scanning.overlapped
    assert cached.overlapped  # (it stores nothing new: it learned nothing)


def test_a_stale_heartbeat_stops_counting_and_its_file_is_removed(tmp_path: Path) -> None:
    wall = Wall()
    killed, alive = registry(tmp_path, wall), registry(tmp_path, wall)
    killed.start()
    killed.beat(10.0, sending=True)  # then kill -9: no more heartbeats, no finish
    wall.now += 5.0
    alive.start()
    alive.beat(10.0, sending=True)
    alive.finish(10.0, sending=True)
    assert not alive.overlapped
    assert not killed.entry_path.exists()


def test_a_dead_pid_stops_counting_at_once_and_its_file_is_removed(tmp_path: Path) -> None:
    wall = Wall()
    gone = RunRegistry(KEY, tmp_path, wall=wall, pid=dead_pid())
    here = RunRegistry(KEY, tmp_path, wall=wall)  # the real pid check, our own pid
    gone.start()
    gone.beat(10.0, sending=True)  # fresh heartbeat, but nobody behind it
    here.start()
    here.beat(10.0, sending=True)
    assert not here.overlapped
    assert json_files(tmp_path) == [here.entry_path.name]


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    assert pid_alive(1)  # init: alive, though (as a user) not ours to signal
    assert not pid_alive(0) and not pid_alive(-1)


def test_a_short_run_inside_a_long_one_is_known_to_both(tmp_path: Path) -> None:
    wall = Wall()
    long, short = registry(tmp_path, wall), registry(tmp_path, wall)
    long.start()
    wall.now += 0.5
    long.beat(20.0, sending=True)
    wall.now += 0.1
    short.start()  # between two heartbeats of the long run...
    wall.now += 0.3
    short.finish(30.0, sending=True)  # ...and over before the next
    wall.now += 0.1
    long.beat(20.0, sending=True)
    assert short.overlapped
    long.finish(20.0, sending=True)
    assert long.overlapped
    assert list(tmp_path.iterdir()) == []  # the flag it was left is gone with it


def test_the_peak_shared_rate_is_the_sum_of_the_live_runs_rates(tmp_path: Path) -> None:
    wall = Wall()
    one, two, three = (registry(tmp_path, wall) for _ in range(3))
    for run in (one, two, three):
        run.start()
    wall.now += 6.0  # (a peak counts once each rate covers the whole 5 s span)
    three.beat(8.0, sending=True)
    two.beat(20.0, sending=True)
    one.beat(12.0, sending=True)
    assert one.peak_shared == pytest.approx(40.0)
    wall.now += 0.5
    one.beat(9.0, sending=True)  # lower now: the peak stays
    assert one.peak_shared == pytest.approx(40.0)
    three.finish(8.0, sending=True)
    wall.now += 0.5
    one.beat(25.0, sending=True)  # 25 + 20 from the other live run
    assert one.peak_shared == pytest.approx(45.0)


def test_a_young_run_counts_for_its_share_of_the_span(tmp_path: Path) -> None:
    """A run 1 s old reports answers over 1 s, which a burst at its start inflates: it counts
    as if spread over the 5 s span."""
    wall = Wall()
    old, young = registry(tmp_path, wall), registry(tmp_path, wall)
    old.start()
    wall.now += 9.0
    young.start()
    wall.now += 1.0
    young.beat(50.0, sending=True)
    old.beat(30.0, sending=True)
    assert old.peak_shared == pytest.approx(30.0 + 50.0 / 5)
    assert young.peak_shared == 0.0  # too young to measure a peak itself


def test_an_unwritable_state_dir_is_one_warning_and_then_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    warnings: list[str] = []
    run = RunRegistry(KEY, blocker / "runs", wall=Wall(), warn=warnings.append)
    run.start()
    run.beat(10.0, sending=True)
    run.finish(10.0, sending=True)
    assert len(warnings) == 1 and "concurrent runs" in warnings[0]
    assert not run.overlapped and run.peak_shared == 0.0


def test_a_damaged_entry_is_skipped_and_removed_once_old(tmp_path: Path) -> None:
    wall = Wall()
    run = registry(tmp_path, wall)
    run.start()
    broken = tmp_path / f"{run.name.rsplit('-', 2)[0]}-123-abcd.json"
    broken.write_text("{half")
    run.beat(10.0, sending=True)
    assert broken.exists() and not run.overlapped  # (it may be written right now)
    os.utime(broken, (0, 0))
    run.beat(10.0, sending=True)
    assert not broken.exists()


# -- what an overlapped run stores -------------------------------------------------------------


def test_a_shared_run_never_lowers_the_stored_rate_and_keeps_its_upper() -> None:
    stored = LearnedPace(47.5, 52.0, gated=False, burst=40)
    share = LearnedPace(7.3, 8.0, gated=False, burst=6)
    kept = shared_pace(stored, share, peak_shared=0.0)
    assert kept == LearnedPace(47.5, 52.0, False, 40)


def test_a_shared_run_raises_the_rate_to_what_all_were_admitted() -> None:
    kept = shared_pace(None, LearnedPace(7.3, 8.0, burst=6), peak_shared=50.0)
    assert kept.rate == pytest.approx(47.5)
    assert kept.upper == 50.0  # not the share's upper (8): what all of them got at once
    assert kept.upper_estimated  # (an estimate: the next run goes to it and probes past)
    assert kept.burst == 6  # (nothing better known)
    # ...but not past a rate that drew a 429 to a lone run:
    capped = shared_pace(LearnedPace(30.0, 40.0), LearnedPace(7.3), peak_shared=60.0)
    assert capped.rate == 40.0 and capped.upper is None


def test_a_later_overlapped_runs_higher_peak_raises_an_estimated_upper() -> None:
    """Four runs at once: the first to finish saw the least of their peak (44.6 of a 50/s
    limit) and stored it as the bound; the others, finishing later, saw more. An estimate
    does not cap their evidence, as a rate that drew a 429 to a lone run does: the highest
    peak is kept."""
    first = shared_pace(None, LearnedPace(11.0), peak_shared=44.6)
    assert first.upper == 44.6 and first.upper_estimated
    later = shared_pace(first, LearnedPace(12.4), peak_shared=50.2)
    assert later.rate == pytest.approx(0.95 * 50.2)
    assert later.upper == 50.2 and later.upper_estimated
    lower = shared_pace(later, LearnedPace(12.0), peak_shared=40.0)
    assert lower.rate == later.rate and lower.upper == 50.2  # (never lowered)


def test_an_estimated_upper_survives_the_stored_form() -> None:
    pace = LearnedPace(42.4, 44.6, gated=True, burst=12, upper_estimated=True)
    assert parse_pace(pace_entry(pace, now_wall=1000.0)) == pace
    lone = LearnedPace(48.0, 50.5, gated=True, burst=12)
    assert parse_pace(pace_entry(lone, now_wall=1000.0)) == lone
    # (an entry written before the flag existed: a rate that drew a 429, as it always was)
    assert parse_pace({"rate": 48.0, "upper": 50.5}) == LearnedPace(48.0, 50.5)


def test_the_memory_keeps_a_lone_runs_rate_but_not_an_overlapped_ones_lower_one(
    tmp_path: Path,
) -> None:
    memory = PacingMemory(tmp_path)
    memory.remember(BASE, "signals", LearnedPace(47.5, 52.0, burst=40), now_wall=1000.0)
    memory.save()
    shared = PacingMemory(tmp_path)
    shared.remember(
        BASE, "signals", LearnedPace(7.3, 8.0, burst=6), 2000.0, overlapped=True, peak_shared=30.0
    )
    shared.save()
    assert PacingMemory(tmp_path).learned(BASE, "signals") == LearnedPace(47.5, 52.0, burst=40)
    alone = PacingMemory(tmp_path)
    alone.remember(BASE, "signals", LearnedPace(30.0, 33.0, burst=25), now_wall=3000.0)
    alone.save()  # a lone run lowers it: the limit itself went down
    assert PacingMemory(tmp_path).learned(BASE, "signals") == LearnedPace(30.0, 33.0, burst=25)


def test_an_overlapped_run_compares_with_what_is_stored_when_it_saves(tmp_path: Path) -> None:
    """Two overlapped runs read the file at start; the first to end raises the rate; the
    second must not bring it back down to what it read."""
    first, second = PacingMemory(tmp_path), PacingMemory(tmp_path)
    first.remember(BASE, "signals", LearnedPace(20.0), 1000.0, overlapped=True, peak_shared=48.0)
    first.save()
    second.remember(BASE, "signals", LearnedPace(15.0), 1001.0, overlapped=True, peak_shared=0.0)
    second.save()
    learned = PacingMemory(tmp_path).learned(BASE, "signals")
    assert learned is not None and learned.rate == pytest.approx(0.95 * 48.0)


# -- through a whole scan ----------------------------------------------------------------------


@pytest.mark.usefixtures("respx_over_aiohttp")
@pytest.mark.parametrize("others", [False, True])
def test_a_scan_that_overlapped_another_does_not_lower_the_learned_rate(others: bool) -> None:
    memory = PacingMemory()
    memory.remember(BASE, "signals", LearnedPace(40.0), now_wall=1000.0)
    memory.save()
    if others:  # another scan against the same upstream, alive (our pid), sending
        other = RunRegistry(KEY, pid=os.getpid())
        other.start()
        other.beat(20.0, sending=True)
    answers = iter([httpx.Response(429)])

    def answer(request: httpx.Request) -> httpx.Response:
        return next(answers, httpx.Response(200, json={"ok": True}))

    with respx.mock(base_url=BASE) as mock:
        mock.get(path__regex=r"^/").mock(side_effect=answer)
        result = CliRunner().invoke(
            app, ["scan", "BTC", "ETH", "SOL", "--base-url", BASE, "-t", "signals"]
        )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["throttled"] == 1
    saved = json.loads((state_dir() / "pacing.json").read_text())["rates"][KEY]
    if others:
        assert saved["rate"] == 40.0  # its own cut was its share: the stored rate stays
        assert other.entry_path.exists()  # (it flagged the other run, and left it alone)
        other.finish(20.0, sending=True)
        assert other.overlapped
    else:
        assert saved["rate"] < 40.0  # alone, its 429 says the limit is lower
    runs = state_dir() / "runs"
    assert [p.name for p in runs.iterdir()] == []  # every run took its entry with it


def test_two_scans_at_once_against_one_limit_keep_the_rate_one_alone_learned(
    tmp_path: Path,
) -> None:
    """The cron case, for real: two scans share a 40 req/s limit (a small bucket, so neither
    can finish on its burst before the other starts), starting from the rate a lone run
    learned. Each finds only its share; the rate kept afterwards is still the lone run's."""
    from scanctl.demo.testing import running_demo_process
    from tests.processes import start_scanctl

    demo = ["--rate-limit", "40", "--burst", "5", "--latency-median", "0.01"]
    env = {"SCANCTL_STATE_DIR": str(tmp_path)}
    with running_demo_process([*demo, "--latency-sigma", "0.2"]) as url:
        memory = PacingMemory(tmp_path)
        memory.remember(url, "signals", LearnedPace(38.0), now_wall=1000.0)
        memory.save()
        args = ["scan", "-f", "-", "-t", "signals", "--base-url", url, "--no-cache", "-q"]
        scans = [
            start_scanctl(args, "\n".join(f"R{run}{i:04d}" for i in range(40)), env)
            for run in range(2)
        ]
        for scan in scans:
            _, stderr = scan.communicate(timeout=60)
            assert scan.returncode == 0, stderr
    learned = PacingMemory(tmp_path).learned(url, "signals")
    assert learned is not None and learned.rate >= 38.0
    assert list((tmp_path / "runs").iterdir()) == []
