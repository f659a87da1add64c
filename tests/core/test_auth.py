"""Client keys, tenants and trusted proxies (router_svc.core.auth)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from multidict import CIMultiDict

from router_svc.config.schema import AuthConfig, ConfigError
from router_svc.core.auth import (
    ANONYMOUS,
    PROXY_SECRET_HEADER,
    Caller,
    ClientKey,
    Gate,
    TrustRule,
    check_model,
    hash_key,
    identify,
    match_key,
    parse_keys_document,
    parse_keys_env,
    parse_networks,
)
from router_svc.core.errors import BadRequest, Forbidden, Unauthorized

MODELS = ("phi4", "mistral")
NO_TRUST = TrustRule()
KEYS = [ClientKey(bytes.fromhex(hash_key("sk-acme")), "acme"),
        ClientKey(bytes.fromhex(hash_key("sk-beta")), "beta", frozenset({"phi4"}))]


def who(headers: dict[str, str] | CIMultiDict[str], peer: str | None = None, *,
        keys: list[ClientKey] | None = None, trust: TrustRule = NO_TRUST,
        header: str | None = "X-Tenant", share_anonymous: bool = False) -> Caller:
    return identify(headers, peer, keys=keys, trust=trust, partition_header=header,
                    share_anonymous=share_anonymous)


# --------------------------------------------------------------------------- without keys


def test_without_keys_the_tenant_is_a_hash_of_the_authorization_header() -> None:
    a = who({"Authorization": "Bearer sk-secret-a"})
    b = who({"authorization": "Bearer sk-secret-b"})
    assert a.tenant and b.tenant and a.tenant != b.tenant
    assert a.tenant.startswith("key:") and "sk-secret" not in a.tenant
    assert a.models is None and not a.authenticated


def test_a_request_without_credentials_shares_nothing_unless_configured() -> None:
    assert who({}).tenant is None
    assert who({}, share_anonymous=True).tenant == ANONYMOUS


def test_a_tenant_header_counts_only_from_a_trusted_proxy() -> None:
    h = {"X-Tenant": "acme", "Authorization": "Bearer k"}
    untrusted = who(h, "203.0.113.9")
    assert untrusted.tenant == who({"Authorization": "Bearer k"}).tenant  # ignored
    by_address = TrustRule(parse_networks(["10.0.0.0/8"]))
    assert who(h, "10.1.2.3", trust=by_address).tenant == "header:acme"
    assert who(h, "11.1.2.3", trust=by_address).tenant != "header:acme"
    assert who(h, None, trust=by_address).tenant != "header:acme"  # peer unknown
    by_secret = TrustRule(secret="s3cret")
    assert who({**h, PROXY_SECRET_HEADER: "s3cret"}, trust=by_secret).tenant == "header:acme"
    assert who({**h, PROXY_SECRET_HEADER: "guess"}, trust=by_secret).tenant != "header:acme"


def test_repeated_tenant_or_key_headers_are_refused() -> None:
    trust = TrustRule(parse_networks(["127.0.0.1"]))
    twice = CIMultiDict([("X-Tenant", "acme"), ("x-tenant", "beta")])
    with pytest.raises(BadRequest) as e:
        who(twice, "127.0.0.1", trust=trust)
    assert e.value.status == 400 and e.value.param == "X-Tenant"
    with pytest.raises(BadRequest):  # merged by a proxy into one value
        who({"X-Tenant": "acme,beta"}, "127.0.0.1", trust=trust)
    with pytest.raises(BadRequest):
        who(CIMultiDict([("Authorization", "Bearer a"), ("Authorization", "Bearer b")]))


# --------------------------------------------------------------------------- with keys


def test_keys_name_the_tenant_and_the_models() -> None:
    acme = who({"Authorization": "Bearer sk-acme"}, keys=KEYS)
    assert acme == Caller("tenant:acme", None, authenticated=True)
    beta = who({"Authorization": "bearer  sk-beta "}, keys=KEYS)
    assert beta.tenant == "tenant:beta" and beta.models == frozenset({"phi4"})
    assert beta.may_use("phi4") and not beta.may_use("mistral")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer sk-nope"},
                                     {"Authorization": "Basic c2stYWNtZQ=="},
                                     {"Authorization": "Bearer"}])
def test_no_or_a_wrong_key_is_401(headers: dict[str, str]) -> None:
    with pytest.raises(Unauthorized) as e:
        who(headers, keys=KEYS, share_anonymous=True)
    assert e.value.status == 401 and e.value.code == "invalid_api_key"


def test_a_trusted_tenant_header_splits_a_keys_tenant_never_leaves_it() -> None:
    trust = TrustRule(secret="s")
    h = {"Authorization": "Bearer sk-acme", "X-Tenant": "team1", PROXY_SECRET_HEADER: "s"}
    assert who(h, keys=KEYS, trust=trust).tenant == "tenant:acme/header:team1"


def test_match_key_compares_digests() -> None:
    assert match_key(KEYS, "sk-beta") is KEYS[1]
    assert match_key(KEYS, "sk-bet") is None
    assert match_key([], "sk-acme") is None


def test_check_model() -> None:
    beta = Caller("tenant:beta", frozenset({"phi4"}), authenticated=True)
    check_model(beta, "phi4", "auto")
    check_model(beta, "auto", "auto")  # routing picks among the allowed ones
    with pytest.raises(Forbidden) as e:
        check_model(beta, "mistral", "auto")
    assert e.value.status == 403 and e.value.param == "model"


# --------------------------------------------------------------------------- reading keys


def test_keys_document() -> None:
    doc = {"keys": [{"sha256": hash_key("a"), "tenant": "t1"},
                    {"sha256": hash_key("b"), "tenant": "t2", "models": ["phi4"]}]}
    keys = parse_keys_document(doc, "auth.keys_file", MODELS)
    assert [k.tenant for k in keys] == ["t1", "t2"] and keys[1].models == {"phi4"}


@pytest.mark.parametrize(("doc", "words"), [
    ({"keys": [{"sha256": "abc", "tenant": "t"}]}, "64 lower-case hex"),
    ({"keys": [{"sha256": hash_key("a"), "tenant": ""}]}, "tenant"),
    ({"keys": [{"sha256": hash_key("a"), "tenant": "t", "models": ["gpt9"]}]}, "gpt9"),
    ({"keys": [{"key": "sk-plain", "tenant": "t"}]}, "expected sha256"),
    ({"clients": []}, "keys:"),
])
def test_bad_keys_documents_name_the_entry(doc: object, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_keys_document(doc, "auth.keys_file", MODELS)
    assert words in str(e.value) and "auth.keys_file" in str(e.value)


def test_keys_from_the_environment_are_hashed() -> None:
    keys = parse_keys_env("acme=sk-a, beta=sk-b,", "auth.keys_env")
    assert [k.tenant for k in keys] == ["acme", "beta"]
    assert match_key(keys, "sk-b") is keys[1] and b"sk-b" not in keys[1].digest
    with pytest.raises(ConfigError):
        parse_keys_env("sk-without-tenant", "auth.keys_env")


def test_bad_trusted_proxy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"auth.trusted_proxies\[1\]"):
        parse_networks(["10.0.0.0/8", "not-an-address"])


# --------------------------------------------------------------------------- the gate


def write_keys(path: Path, *pairs: tuple[str, str]) -> None:
    doc = {"keys": [{"sha256": hash_key(k), "tenant": t} for k, t in pairs]}
    path.write_text(yaml.safe_dump(doc))


def test_gate_rotates_keys_when_the_file_changes(tmp_path: Path) -> None:
    keys = tmp_path / "keys.yaml"
    write_keys(keys, ("sk-old", "acme"))
    now = [0.0]
    gate = Gate(AuthConfig(keys_file=keys, reload_interval_s=1.0), partition_header=None,
                share_anonymous=False, known_models=MODELS, environ={}, clock=lambda: now[0])
    assert gate.enabled and "1 client key" in gate.describe()
    old = {"Authorization": "Bearer sk-old"}
    assert gate.identify(old, None).tenant == "tenant:acme"
    write_keys(keys, ("sk-new", "acme"))
    os.utime(keys, (1, 1))  # a different mtime whatever the file system's resolution
    assert gate.identify(old, None).tenant == "tenant:acme"  # not re-checked within 1 s
    now[0] = 2.0
    with pytest.raises(Unauthorized):
        gate.identify(old, None)
    assert gate.identify({"Authorization": "Bearer sk-new"}, None).tenant == "tenant:acme"
    keys.write_text("keys: [oops")  # a broken edit keeps the keys that work
    os.utime(keys, (2, 2))
    now[0] = 4.0
    assert gate.identify({"Authorization": "Bearer sk-new"}, None).tenant == "tenant:acme"


def test_gate_start_up_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"auth\.keys_file"):
        Gate(AuthConfig(keys_file=tmp_path / "missing.yaml"), partition_header=None,
             share_anonymous=False, known_models=MODELS, environ={})
    with pytest.raises(ConfigError, match="ROUTER_KEYS is not set"):
        Gate(AuthConfig(keys_env="ROUTER_KEYS"), partition_header=None,
             share_anonymous=False, known_models=MODELS, environ={})
    with pytest.raises(ConfigError, match="PROXY_SECRET is not set"):
        Gate(AuthConfig(proxy_secret_env="PROXY_SECRET"), partition_header="X-Tenant",
             share_anonymous=False, known_models=MODELS, environ={})


def test_gate_off_says_so() -> None:
    gate = Gate(AuthConfig(), partition_header=None, share_anonymous=False,
                known_models=MODELS, environ={})
    assert not gate.enabled and "auth: off" in gate.describe()
    assert gate.identify({}, None).tenant is None
