"""Tests of deejai.engine.resolve: naming a track by path, id or words."""
from __future__ import annotations

import os

import pytest

from deejai.engine.errors import AmbiguousTrackError, TrackNotFoundError
from deejai.engine.resolve import normalise_text, resolve_track, track_label, words


@pytest.fixture
def records(tmp_path):
    music = tmp_path / "music"
    rows = [
        (1, "Björk", "Jóga", "Homogenic", "Björk/01 Jóga.mp3"),
        (2, "Björk", "Hunter", "Homogenic", "Björk/02 Hunter.mp3"),
        (3, "Wesnoth", "Battle Epic", "Wesnoth OST", "wesnoth/battle_epic.mp3"),
        (4, "Wesnoth", "Battle Epic (Reprise)", "Wesnoth OST", "wesnoth/battle_epic_reprise.mp3"),
        (5, "Nexuiz", "Ambient 4", "Nexuiz", "nexuiz/ambient4.mp3"),
        (6, "Nexuiz", "Ambient 14", "Nexuiz", "nexuiz/ambient14.mp3"),
        (7, "Nexuiz", "Ambient 42", "Nexuiz", "nexuiz/ambient42.mp3"),
        (8, "Prince", "1999", "1999", "prince/1999.mp3"),
        (9, "", "", "", "loose/Frontiers.mp3"),
        (1999, "Someone", "Other", "", "other/x.mp3"),
    ]
    out = []
    for tid, artist, title, album, rel in rows:
        path = music / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"not really audio")
        out.append({"id": tid, "path": str(path), "artist": artist, "title": title, "album": album})
    return out


def test_normalise_folds_case_and_accents():
    assert normalise_text("Björk – JÓGA") == "bjork – joga"
    assert normalise_text("\u01c4 \ufb01") == "dz fi"  # NFKD compatibility forms, no marks
    assert words("Sigur Rós: Ágætis byrjun!") == ["sigur", "ros", "agætis", "byrjun"]  # æ is a letter, not a + e


def test_file_names_split_on_underscores(records):
    assert words("battle_epic-v2.mp3") == ["battle", "epic", "v2", "mp3"]
    untagged = [dict(r, artist="", title="", album="") for r in records]
    assert resolve_track("epic reprise", untagged) == 4


def test_by_id(records):
    assert resolve_track(3, records) == 3
    assert resolve_track("#3", records) == 3
    assert resolve_track("# 5", records) == 5
    assert resolve_track("4", records) == 4
    with pytest.raises(TrackNotFoundError, match="no track with id 77"):
        resolve_track(77, records)
    with pytest.raises(TrackNotFoundError, match="no track with id 77"):
        resolve_track("#77", records)


def test_digits_are_an_id_first_then_words(records):
    assert resolve_track("1999", records) == 1999  # an id wins
    without = [r for r in records if r["id"] != 1999]
    assert resolve_track("1999", without) == 8  # else the title


def test_by_path(records, tmp_path, monkeypatch):
    target = records[2]["path"]
    assert resolve_track(target, records) == 3
    monkeypatch.chdir(tmp_path / "music")
    assert resolve_track("wesnoth/battle_epic.mp3", records) == 3
    assert resolve_track("./wesnoth/../wesnoth/battle_epic.mp3", records) == 3
    link = tmp_path / "link.mp3"
    os.symlink(target, link)
    assert resolve_track(str(link), records) == 3
    linkdir = tmp_path / "linked-music"
    os.symlink(tmp_path / "music", linkdir)
    assert resolve_track(str(linkdir / "nexuiz" / "ambient42.mp3"), records) == 7
    monkeypatch.chdir(tmp_path)
    assert resolve_track("nexuiz/ambient14.mp3", records, library_root=tmp_path / "music") == 6


def test_query_words_case_and_accents(records):
    assert resolve_track("bjork joga", records) == 1
    assert resolve_track("BJÖRK hunt", records) == 2  # a word may be the start of a word
    assert resolve_track("homogenic hunter", records) == 2
    assert resolve_track("frontiers", records) == 9  # the file name stands in for the title
    assert resolve_track("Björk – Jóga", records) == 1  # separators are not words


def test_query_falls_back_to_substrings(records):
    assert resolve_track("ontier", records) == 9


def test_ambiguous_lists_candidates_best_first(records):
    with pytest.raises(AmbiguousTrackError) as info:
        resolve_track("bjork", records)
    err = info.value
    assert {c["id"] for c in err.candidates} == {1, 2}
    assert err.candidates[0]["label"] == "Björk – Jóga – Homogenic"
    assert "[1]" in str(err) and "[2]" in str(err)
    assert err.exit_code == 2
    with pytest.raises(AmbiguousTrackError) as info:
        resolve_track("ambient", records)
    assert [c["id"] for c in info.value.candidates] == [5, 6, 7]


def test_ranking_puts_the_exact_title_first(records):
    # "battle epic" is the exact title of 3 and a part of 4's: 3 wins outright
    assert resolve_track("battle epic", records) == 3
    # "ambient 4": words start "Ambient 4" and "Ambient 42", exact title of 5 only
    assert resolve_track("ambient 4", records) == 5
    # "wesnoth epic" matches two tracks, neither exactly: listed, fewest extra words first
    with pytest.raises(AmbiguousTrackError) as info:
        resolve_track("wesnoth epic", records)
    assert [c["id"] for c in info.value.candidates] == [3, 4]


def test_exact_match_only_when_unique(records):
    twin = dict(records[4], id=50, path=records[4]["path"].replace("ambient4", "ambient4 copy"))
    with pytest.raises(AmbiguousTrackError) as info:
        resolve_track("ambient 4", records + [twin])
    assert [c["id"] for c in info.value.candidates][:2] == [5, 50]
    # the file name tells them apart
    assert resolve_track("ambient4 copy", records + [twin]) == 50


def test_not_found(records):
    with pytest.raises(TrackNotFoundError, match="deejai tracks"):
        resolve_track("polka", records)
    with pytest.raises(TrackNotFoundError):
        resolve_track("   ", records)
    with pytest.raises(TrackNotFoundError, match="no words"):
        resolve_track("--", records)
    with pytest.raises(TrackNotFoundError):
        resolve_track("bjork", [])


def test_an_existing_file_outside_the_library(tmp_path, records):
    stray = tmp_path / "stray.mp3"
    stray.write_bytes(b"x")
    with pytest.raises(TrackNotFoundError, match="not in the library"):
        resolve_track(str(stray), records)


def test_track_label():
    assert track_label({"artist": "A", "title": "T", "album": "L", "path": "/x/y.mp3"}) == "A – T – L"
    assert track_label({"artist": "", "title": "", "album": "", "path": "/x/y z.mp3"}) == "y z"


def test_prepared_records_follow_the_list(records):
    assert resolve_track("hunter", records) == 2
    assert resolve_track("joga", records) == 1  # same list again: the prepared form is reused
    renamed = [dict(r, title="Hunted") if r["id"] == 2 else r for r in records]
    assert resolve_track("hunted", renamed) == 2
    with pytest.raises(TrackNotFoundError):
        resolve_track("hunted", records)
    grown = list(records)
    grown.append({"id": 99, "path": "/x/new.mp3", "artist": "New", "title": "Song", "album": ""})
    assert resolve_track("new song", grown) == 99
