"""Safety of `curator generate` and the teacher server, through the real SDK clients
against the local teacher server: deadlines that hold against a trickling server, one
payer per sample across processes, writers that outlast a long reader, no credentials
from a URL stored, and a server that only its own scripts may reconfigure."""

from __future__ import annotations

import pytest

from curator.errors import CuratorError
from curator.teachers.generate import generate
from curator.teachers.providers import safe_url, url_secrets

from .test_generate import make_spec, rows


def _no_byte_holds(wh, secret: bytes) -> None:
    for f in wh.path.parent.rglob("*"):
        if f.is_file():
            assert secret not in f.read_bytes(), f


def test_safe_url_removes_userinfo_and_credential_parameters():
    assert safe_url("http://user:SECRET@host:8000/v1") == "http://host:8000/v1"
    assert safe_url("https://h/v1?api-version=2024&api_key=SECRET&token=T") == \
        "https://h/v1?api-version=2024&api_key=REDACTED&token=REDACTED"
    assert safe_url("http://[::1]:9/v1") == "http://[::1]:9/v1"
    assert url_secrets("http://u:p@h/v1?key=x&x=1") == ["userinfo", "key"]
    assert url_secrets("http://127.0.0.1:8765/v1") == []


@pytest.mark.parametrize("provider", ["openai-compatible", "anthropic"])
def test_credentials_in_the_base_url_fail_fast_and_are_never_stored(math_wh, serve, keys,
                                                                     prices, provider):
    srv = serve(script=["The answer is 1."])
    spec = make_spec(srv, prices, provider=provider, samples=2, limit=3)
    host = spec.base_urls[0].split("://", 1)[1]
    spec.base_urls = [f"http://user:SECRETPASS123@{host}"]
    with pytest.raises(CuratorError) as err:
        generate(math_wh, spec)
    msg = str(err.value)
    assert "credentials in the URL" in msg and "SECRETPASS123" not in msg
    assert srv.log == []                                   # nothing was sent
    assert rows(math_wh, "SELECT count(*) FROM sample_attempts") == [(0,)]
    _no_byte_holds(math_wh, b"SECRETPASS123")


def test_credential_parameters_of_a_base_url_are_redacted_where_stored(math_wh, serve, keys,
                                                                        prices):
    srv = serve(script=["The answer is 1."])
    spec = make_spec(srv, prices, provider="openai-compatible", samples=2, limit=3)
    spec.base_urls = [spec.base_urls[0] + "?api_key=SECRETQUERY123"]
    # the SDKs put the path after the query, so such an endpoint answers 404 (fatal)
    with pytest.raises(CuratorError) as err:
        generate(math_wh, spec)
    assert "SECRETQUERY123" not in str(err.value)
    (endpoint,) = {r[0] for r in rows(math_wh, "SELECT endpoint FROM sample_attempts")}
    assert endpoint.endswith("/v1?api_key=REDACTED")
    _no_byte_holds(math_wh, b"SECRETQUERY123")
