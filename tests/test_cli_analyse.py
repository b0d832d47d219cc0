"""``deejai analyse``: text and JSON output, --patches, per-file errors and the exit status."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from deejai.ui_cli.main import cli
from tests.audiogen import write_mp3

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "msd-musicnn"

pytestmark = pytest.mark.skipif(
    not (MODEL_DIR / "model.tflite").is_file(), reason="models/msd-musicnn/model.tflite not there"
)


@pytest.fixture
def files(tmp_path):
    good = write_mp3(tmp_path / "a song – ü.mp3", seconds=12.0, kind="chord", seed=3,
                     tags={"artist": "Band", "title": "Song"})
    other = write_mp3(tmp_path / "b.mp3", seconds=7.0, kind="noise", seed=4)
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio at all " * 500)
    return good, other, bad


def test_text_output(files):
    good, other, _ = files
    result = CliRunner().invoke(cli, ["analyse", str(good), str(other)], terminal_width=200)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert str(good) in out and str(other) in out
    assert "Band - Song" in out
    assert "duration 0:12" in out and "200-d" in out
    assert out.count("tags ") == 2 and out.count("time ") == 2


def test_json_output_and_patches(files):
    good, other, _ = files
    result = CliRunner().invoke(cli, ["analyse", "--json", "--patches", "2", str(good), str(other)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["model"] == "msd-musicnn-v2" and doc["files"] == 2 and doc["failed"] == 0
    first = doc["results"][0]
    assert first["ok"] and first["path"] == str(good.resolve())
    assert first["patches"] == 2 and len(first["vector"]) == 200
    assert len(first["top_tags"]) == 5 and len(first["tag_probs"]) == 50
    assert first["tags"] == {"artist": "Band", "title": "Song"}
    assert "patch_vectors" not in first
    result = CliRunner().invoke(cli, ["analyse", "--json", "-k", "0", "--vectors", str(good)])
    doc = json.loads(result.stdout)
    n_all = (1 + 12 * 16000 // 256) // 187
    assert doc["results"][0]["patches"] == n_all
    assert len(doc["results"][0]["patch_vectors"]) == n_all


def test_a_bad_file_fails_alone_and_sets_the_exit_status(files):
    good, _, bad = files
    result = CliRunner().invoke(cli, ["analyse", "--json", str(bad), str(good)])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["failed"] == 1
    assert doc["results"][0] == {"path": str(bad), "ok": False,
                                 "error": doc["results"][0]["error"]}
    assert "bad.mp3" in doc["results"][0]["error"]
    assert doc["results"][1]["ok"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("deejai:")]
    assert len(errors) == 1 and "bad.mp3: not an audio file" in errors[0]


def test_console_script_end_to_end(files, tmp_path):
    """The installed entry point, in a real process: one error line per bad file, exit 1."""
    good, _, bad = files
    missing = tmp_path / "missing.mp3"
    proc = subprocess.run(
        [sys.executable, "-m", "deejai.ui_cli.main", "analyse", str(good), str(bad), str(missing)],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120,
    )
    assert proc.returncode == 1
    assert str(good) in proc.stdout and "tags" in proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("deejai:")]
    assert errors == [
        f"deejai: error: {bad}: not an audio file, or a format no decoder here reads",
        f"deejai: error: {missing}: no such file",
    ]
    assert "Traceback" not in proc.stderr


def test_a_missing_model_is_one_line(files, tmp_path):
    good, _, _ = files
    proc = subprocess.run(
        [sys.executable, "-m", "deejai.ui_cli.main", "analyse", "--model",
         str(tmp_path / "no-model"), str(good)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("deejai: error:") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _analyse_process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deejai.ui_cli.main", *args], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, COLUMNS="80"))


def test_a_decoders_own_notes_stay_out_of_the_clean_error(tmp_path):
    """A file that makes libmpg123 print "Note: Illegal Audio-MPEG-Header ..." on its own fd 2:
    the person sees deejai's one line; --debug also shows the decoder's notes."""
    junk = tmp_path / "zeros.mp3"
    junk.write_bytes(b"\x00" * 20000)
    quiet = _analyse_process("analyse", str(junk))
    assert quiet.returncode == 1
    assert quiet.stderr.splitlines() == [
        f"deejai: error: {junk}: not an audio file, or a format no decoder here reads"]
    loud = _analyse_process("--debug", "analyse", str(junk))
    assert "Illegal Audio-MPEG-Header" in loud.stderr  # the notes exist; --debug shows them


def test_long_tag_lines_are_not_cut_at_80_columns(tmp_path):
    long_title = "A Title Long Enough To Go Past Eighty Columns On Any Terminal, Surely By Now"
    song = write_mp3(tmp_path / "long.mp3", seconds=7.0, kind="chord", seed=8,
                     tags={"artist": "An Artist With A Long Name", "title": long_title})
    res = _analyse_process("analyse", str(song))
    assert res.returncode == 0, res.stderr
    assert f"An Artist With A Long Name - {long_title}" in res.stdout.splitlines()[1]
