"""One file -> TrackAnalysis: tags, the audio hash, and the vectors from the real model."""
from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deejai.engine import analyse as an
from deejai.engine.catalogue import l2_normalise
from deejai.engine.errors import AudioError, EmptyAudioError, UnsupportedFormatError
from tests.audiogen import synth, write_mp3

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "msd-musicnn"


@pytest.fixture(scope="module")
def model():
    if not (MODEL_DIR / "model.tflite").is_file():
        pytest.skip("models/msd-musicnn/model.tflite not there")
    from deejai.engine.model import Model

    m = Model("msd-musicnn", threads=1)
    yield m
    m.close()


# ------------------------------------------------------------------ tags


def test_read_tags_common_fields(tmp_path):
    path = write_mp3(tmp_path / "t.mp3", seconds=1.0, tags={
        "title": "Song", "artist": "Band", "album": "Record", "albumartist": "Various",
        "genre": "Ambient", "date": "1999-04-01", "tracknumber": "3/12"})
    assert an.read_tags(path) == {
        "title": "Song", "artist": "Band", "album": "Record", "albumartist": "Various",
        "genre": "Ambient", "year": 1999, "tracknumber": 3}


def test_read_tags_of_untagged_and_vorbis_files(tmp_path):
    assert an.read_tags(write_mp3(tmp_path / "plain.mp3", seconds=1.0)) == {}
    flac = tmp_path / "a.flac"
    sf.write(flac, synth("chord", 1.0), 44100)
    from mutagen.flac import FLAC

    f = FLAC(flac)
    f["artist"] = ["One", "Two"]
    f["date"] = "2011"
    f["tracknumber"] = "07"
    f.save()
    assert an.read_tags(flac) == {"artist": "One; Two", "year": 2011, "tracknumber": 7}


def _break_id3(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    assert data[:3] == b"ID3"
    data[3] = 9  # an ID3v2.9 header: mutagen refuses it, mpg123 skips it by its size
    path.write_bytes(bytes(data))
    return path


def test_broken_tags_give_no_tags(tmp_path):
    path = _break_id3(write_mp3(tmp_path / "broken.mp3", seconds=1.0, tags={"artist": "X"}))
    assert an.read_tags(path) == {}
    assert an.read_tags(tmp_path / "missing.mp3") == {}


# ------------------------------------------------------------------ audio hash


def _retag(path: Path, **tags) -> None:
    from mutagen.easyid3 import EasyID3

    t = EasyID3(str(path))
    for k, v in tags.items():
        t[k] = v
    t.save(str(path))


def test_mp3_hash_ignores_tags_and_follows_audio(tmp_path):
    path = write_mp3(tmp_path / "a.mp3", seconds=3.0, kind="beat", seed=1, tags={"artist": "A"})
    before = an.audio_hash(path)
    assert len(before) == 32 and int(before, 16) >= 0
    _retag(path, artist="Someone else entirely", title="A much longer title " * 20)
    assert an.audio_hash(path) == before
    # ID3v1 and APEv2 tags at the end of the file
    from mutagen.apev2 import APEv2
    from mutagen.id3 import ID3

    id3 = ID3(str(path))
    id3.save(str(path), v1=2)
    assert path.read_bytes()[-128:-125] == b"TAG"
    assert an.audio_hash(path) == before
    ape = APEv2()
    ape["Artist"] = "ape"
    ape.save(str(path))
    assert b"APETAGEX" in path.read_bytes()[-300:]
    assert an.audio_hash(path) == before
    # an untagged copy of the same audio hashes the same
    bare = write_mp3(tmp_path / "bare.mp3", seconds=3.0, kind="beat", seed=1)
    assert an.audio_hash(bare) == before
    other = write_mp3(tmp_path / "b.mp3", seconds=3.0, kind="beat", seed=2, tags={"artist": "A"})
    assert an.audio_hash(other) != before


def test_mp3_audio_span_parses_tag_layouts():
    frames = b"\xff\xfb\x90\x00" + bytes(range(256)) * 4
    id3v2 = b"ID3\x04\x00\x10" + bytes([0, 0, 1, 0]) + b"\x00" * 128 + b"3DI" + b"\x00" * 7
    ape_items = b"\x00" * 40
    ape_footer = (b"APETAGEX" + (2000).to_bytes(4, "little")
                  + (len(ape_items) + 32).to_bytes(4, "little") + (1).to_bytes(4, "little")
                  + (0x80000000).to_bytes(4, "little") + b"\x00" * 8)
    ape = b"APETAGEX" + b"\x00" * 24 + ape_items + ape_footer  # with header
    id3v1 = b"TAG" + b"\x00" * 125
    data = id3v2 + frames + ape + id3v1
    start, end = an._mp3_audio_span(io.BytesIO(data), len(data))
    assert data[start:end] == frames


def test_flac_hash_uses_streaminfo_md5_and_ignores_tags(tmp_path):
    path = tmp_path / "a.flac"
    sf.write(path, synth("chord", 2.0, seed=3), 44100)
    before = an.audio_hash(path)
    from mutagen.flac import FLAC

    f = FLAC(path)
    f["title"] = "x" * 5000
    f.save()
    assert an.audio_hash(path) == before
    sf.write(tmp_path / "b.flac", synth("chord", 2.0, seed=4), 44100)
    assert an.audio_hash(tmp_path / "b.flac") != before


def test_pcm_hash_for_other_formats(tmp_path):
    sf.write(tmp_path / "a.wav", synth("noise", 12.0, seed=3), 44100)
    sf.write(tmp_path / "a copy.wav", synth("noise", 12.0, seed=3), 44100)
    sf.write(tmp_path / "b.wav", synth("noise", 12.0, seed=4), 44100)
    a = an.audio_hash(tmp_path / "a.wav")
    assert a == an.audio_hash(tmp_path / "a copy.wav")
    assert a != an.audio_hash(tmp_path / "b.wav")


def test_hash_of_bad_files_raises_audio_errors(tmp_path):
    (tmp_path / "empty.mp3").touch()
    with pytest.raises(EmptyAudioError):
        an.audio_hash(tmp_path / "empty.mp3")


# ------------------------------------------------------------------ analyse with the real model


def test_analyse_end_to_end(tmp_path, model):
    path = write_mp3(tmp_path / "Ünï cødé" / "a song.mp3", seconds=20.0, kind="chord", seed=1,
                     tags={"artist": "Band", "title": "Song", "date": "2020", "tracknumber": "2/9"})
    a = an.analyse(path, model, k=4)
    d = model.card.outputs["embedding"]
    t = len(model.card.tag_labels)
    assert a.path == str(path.resolve()) and os.path.isabs(a.path)
    assert a.size == path.stat().st_size and a.mtime_ns == path.stat().st_mtime_ns
    assert a.duration_s == pytest.approx(20.0, abs=0.05)
    assert a.tags == {"artist": "Band", "title": "Song", "year": 2020, "tracknumber": 2}
    assert a.audio_hash == an.audio_hash(path)
    assert a.model == "msd-musicnn"
    assert a.patch_starts_s.shape == (4,) and a.patch_starts_s[0] == 0
    assert a.patch_vectors.shape == (4, d) and a.patch_vectors.dtype == np.float32
    for v in (a.vector, a.intro, a.outro):
        assert v.shape == (d,) and v.dtype == np.float32
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(a.vector, l2_normalise(a.patch_vectors.mean(axis=0)), atol=1e-6)
    np.testing.assert_allclose(a.intro, l2_normalise(a.patch_vectors[0]), atol=1e-6)
    np.testing.assert_allclose(a.outro, l2_normalise(a.patch_vectors[-1]), atol=1e-6)
    assert a.tag_probs.shape == (t,) and np.all((a.tag_probs >= 0) & (a.tag_probs <= 1))
    assert set(a.timings_s) >= {"decode", "mel", "inference", "total"}
    assert a.timings_s["total"] >= a.timings_s["inference"] > 0
    # the same file analysed twice gives the same numbers
    again = an.analyse(path, model, k=4)
    np.testing.assert_array_equal(again.patch_vectors, a.patch_vectors)
    # the embeddings are the model's on the front end's patches
    from deejai.engine.audio import load_patches

    patches, _, _ = load_patches(path, model.card, 4)
    np.testing.assert_allclose(model.predict(patches)["embedding"], a.patch_vectors, atol=1e-5)
    doc = json.loads(json.dumps(an.analysis_to_json(a, model.card.tag_labels)))
    assert doc["patches"] == 4 and len(doc["vector"]) == d and len(doc["top_tags"]) == 5
    assert doc["top_tags"][0]["probability"] == pytest.approx(float(a.tag_probs.max()), abs=1e-4)


def test_analyse_patch_counts(tmp_path, model):
    path = write_mp3(tmp_path / "a.mp3", seconds=20.0, kind="noise", seed=2)
    assert len(an.analyse(path, model, k=0).patch_starts_s) == (1 + 20 * 16000 // 256) // 187
    assert len(an.analyse(path, model, k=2).patch_starts_s) == 2
    assert len(an.analyse(path, model).patch_starts_s) == min(an.DEFAULT_PATCHES, 6)
    short = write_mp3(tmp_path / "short.mp3", seconds=1.5, kind="beat", seed=2)
    s = an.analyse(short, model, k=8)
    assert s.patch_vectors.shape[0] == 1 and np.allclose(s.intro, s.outro)


def test_different_audio_gives_different_vectors(tmp_path, model):
    a = an.analyse(write_mp3(tmp_path / "a.mp3", seconds=8.0, kind="noise", seed=1), model)
    b = an.analyse(write_mp3(tmp_path / "b.mp3", seconds=8.0, kind="chord", seed=1), model)
    assert float(a.vector @ b.vector) < 0.99
    assert a.audio_hash != b.audio_hash


def test_analyse_silence_is_finite(tmp_path, model):
    a = an.analyse(write_mp3(tmp_path / "s.mp3", seconds=7.0, kind="silence"), model)
    assert np.isfinite(a.patch_vectors).all() and np.isfinite(a.vector).all()


def test_analyse_with_broken_tags_still_analyses_the_audio(tmp_path, model):
    path = _break_id3(write_mp3(tmp_path / "b.mp3", seconds=5.0, tags={"artist": "X"}))
    a = an.analyse(path, model, k=2)
    assert a.tags == {} and a.patch_vectors.shape[0] == 1


def test_analyse_bad_files(tmp_path, model):
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"\x00\x01garbage" * 1000)
    with pytest.raises(UnsupportedFormatError, match="junk.mp3"):
        an.analyse(junk, model)
    (tmp_path / "zero.mp3").touch()
    with pytest.raises(EmptyAudioError, match="zero.mp3"):
        an.analyse(tmp_path / "zero.mp3", model)
    with pytest.raises(AudioError, match="no such file"):
        an.analyse(tmp_path / "nope" / "x.mp3", model)
    with pytest.raises(AudioError, match="folder"):
        an.analyse(tmp_path, model)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_analyse_m4a(tmp_path, model):
    import subprocess

    sf.write(tmp_path / "a.wav", synth("beat", 8.0, seed=2), 44100)
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i",
                    str(tmp_path / "a.wav"), "-c:a", "aac", str(tmp_path / "a.m4a")], check=True)
    a = an.analyse(tmp_path / "a.m4a", model, k=2)
    w = an.analyse(tmp_path / "a.wav", model, k=2)
    assert float(a.vector @ w.vector) > 0.95  # AAC is lossy, the embedding barely moves
    assert len(a.audio_hash) == 32
