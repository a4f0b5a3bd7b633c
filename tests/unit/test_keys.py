"""Key lookup by the project's clients: env first, then the key file, and a half-written file is
"no key yet" (a client polling a starting server must wait, not crash)."""

from __future__ import annotations

import json

import pytest

from deploy import keys

KEY_FILE = {"management": {"key": "m-key", "expiration time": "x"},
            "inference": {"key": "i-key", "expiration time": "x"},
            "API": {"key": "a-key"}}  # fmt: skip


@pytest.fixture
def key_path(tmp_path, monkeypatch):
    for var in ("LENET_INFERENCE_TOKEN", "LENET_MANAGEMENT_TOKEN", "LENET_TOKEN_AUTH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LENET_KEY_FILE", str(tmp_path / "key_file.json"))
    return tmp_path / "key_file.json"


def test_keys_come_from_the_file_torchserve_wrote(key_path):
    key_path.write_text(json.dumps(KEY_FILE))
    assert keys.inference_token() == "i-key"
    assert keys.management_token() == "m-key"
    assert keys.auth_headers(keys.inference_token()) == {"Authorization": "Bearer i-key"}


def test_environment_wins_over_the_file(key_path, monkeypatch):
    key_path.write_text(json.dumps(KEY_FILE))
    monkeypatch.setenv("LENET_INFERENCE_TOKEN", "from-env")
    assert keys.inference_token() == "from-env"


@pytest.mark.parametrize("text", ["", "   \n", json.dumps(KEY_FILE)[:40], "[]", '{"inference": 3}'])
def test_missing_empty_or_half_written_file_means_no_key_yet(key_path, text):
    assert keys.inference_token() is None  # no file at all
    key_path.write_text(text)
    assert keys.inference_token() is None


def test_tokens_off_sends_no_header(key_path, monkeypatch):
    key_path.write_text(json.dumps(KEY_FILE))
    monkeypatch.setenv("LENET_TOKEN_AUTH", "off")
    assert keys.inference_token() is None
    assert keys.auth_headers(keys.inference_token()) == {}
