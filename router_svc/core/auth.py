"""Who is calling: client keys, tenants, and whose tenant header is believed.

A client key is stored only as its SHA-256 (the file holds digests; keys from the environment
are hashed as they are read) and compared in constant time against every known digest. The
keys file is re-read when it changes, so a key is rotated by editing the file.

``identify`` is the decision, pure over the request headers and peer address; ``Gate`` is the
small shell that keeps the current keys. The result, a ``Caller``, carries the cache tenant
(None: the request shares no cached answers) and the models the key may use (None: any).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from router_svc.config.schema import AuthConfig, Config, ConfigError
from router_svc.core.errors import BadRequest, Forbidden, Unauthorized

log = logging.getLogger(__name__)

PROXY_SECRET_HEADER = "x-router-proxy-secret"
ANONYMOUS = "anonymous"
_HEX64 = frozenset("0123456789abcdef")


def hash_key(key: str) -> str:
    """The digest a keys file stores for ``key`` (``router-svc auth hash-key``)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ClientKey:
    digest: bytes  # sha256 of the key
    tenant: str
    models: frozenset[str] | None = None  # None: every model


@dataclass(frozen=True)
class Caller:
    """The caller of one request, as far as routing and the cache are concerned."""

    tenant: str | None  # the cache tenant; None: shares nothing
    models: frozenset[str] | None = None  # the models it may use; None: any
    authenticated: bool = False

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


NOBODY = Caller(None)


# --------------------------------------------------------------------------- reading keys


def parse_keys_document(data: Any, where: str, known_models: Collection[str]) -> list[ClientKey]:
    """The keys of a keys file; ConfigError naming the entry and the fix otherwise."""
    problems: list[str] = []
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ConfigError([f"{where}: expected `keys: [{{sha256: ..., tenant: ...}}, ...]`"])
    keys: list[ClientKey] = []
    for i, e in enumerate(entries):
        at = f"{where}: keys[{i}]"
        if not isinstance(e, dict) or set(e) - {"sha256", "tenant", "models"}:
            problems.append(f"{at}: expected sha256, tenant and optionally models")
            continue
        digest, tenant, models = e.get("sha256"), e.get("tenant"), e.get("models")
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _HEX64):
            problems.append(f"{at}.sha256: expected 64 lower-case hex digits "
                            "(`router-svc auth hash-key` prints them for a key)")
            continue
        if not isinstance(tenant, str) or not tenant.strip():
            problems.append(f"{at}.tenant: expected a non-empty name")
            continue
        allowed: frozenset[str] | None = None
        if models is not None:
            if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
                problems.append(f"{at}.models: expected a list of model names")
                continue
            unknown = [m for m in models if m not in known_models]
            if unknown:
                problems.append(f"{at}.models: unknown model(s) {', '.join(unknown)}; use "
                                f"names from model_config: {', '.join(known_models)}")
                continue
            allowed = frozenset(models)
        keys.append(ClientKey(bytes.fromhex(digest), tenant.strip(), allowed))
    if problems:
        raise ConfigError(problems)
    return keys


def parse_keys_env(value: str, where: str) -> list[ClientKey]:
    """``tenant=key`` pairs, comma-separated; the keys are hashed at once."""
    keys: list[ClientKey] = []
    for i, pair in enumerate(p.strip() for p in value.split(",")):
        if not pair:
            continue
        tenant, sep, key = pair.partition("=")
        if not sep or not tenant.strip() or not key.strip():
            raise ConfigError([f"{where}: entry {i + 1} is not `tenant=key`"])
        keys.append(ClientKey(hashlib.sha256(key.strip().encode()).digest(), tenant.strip()))
    return keys


def parse_networks(cidrs: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network,
                                                   ...]:
    nets = []
    for i, c in enumerate(cidrs):
        try:
            nets.append(ipaddress.ip_network(c, strict=False))
        except ValueError as e:
            raise ConfigError([f"auth.trusted_proxies[{i}]: {e}; use an address or CIDR, "
                               "e.g. 10.0.0.0/8"]) from e
    return tuple(nets)


# --------------------------------------------------------------------------- the decision


def header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value of ``name`` (case-insensitive) in a multidict or a plain dict."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return list(getall(name, []))
    low = name.lower()
    return [v for k, v in headers.items() if k.lower() == low]


def single_header(headers: Mapping[str, str], name: str) -> str | None:
    """The one value of ``name``; a repeated header (or values a proxy merged with commas) is
    refused: which one is meant cannot be known, and guessing could cross tenants."""
    values = header_values(headers, name)
    if len(values) > 1 or (values and "," in values[0] and name.lower() != "authorization"):
        raise BadRequest(f"The {name} header is given more than once; send it once.",
                         param=name, code="repeated_header")
    return values[0].strip() if values else None


def bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def match_key(keys: Iterable[ClientKey], token: str) -> ClientKey | None:
    """The key whose digest is ``token``'s; every digest is compared, in constant time."""
    digest = hashlib.sha256(token.encode()).digest()
    found = None
    for k in keys:
        if hmac.compare_digest(k.digest, digest):
            found = k
    return found


@dataclass(frozen=True)
class TrustRule:
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    secret: str | None = None

    def trusts(self, peer: str | None, headers: Mapping[str, str]) -> bool:
        if self.secret is not None:
            given = single_header(headers, PROXY_SECRET_HEADER)
            if given is not None and hmac.compare_digest(given.encode(), self.secret.encode()):
                return True
        if peer and self.networks:
            try:
                addr = ipaddress.ip_address(peer)
            except ValueError:
                return False
            return any(addr in n for n in self.networks)
        return False


def identify(headers: Mapping[str, str], peer: str | None, *, keys: list[ClientKey] | None,
             trust: TrustRule, partition_header: str | None,
             share_anonymous: bool) -> Caller:
    """The caller of one request. ``keys`` None: authentication is off (any caller; the
    tenant is a hash of whatever ``Authorization`` it sends). A tenant header counts only
    from a trusted proxy, and within a key's tenant when keys are on."""
    authorization = single_header(headers, "Authorization")
    tenant_header = single_header(headers, partition_header) if partition_header else None
    proxied = tenant_header if tenant_header and trust.trusts(peer, headers) else None
    if keys is not None:
        token = bearer(authorization)
        if token is None:
            raise Unauthorized("You didn't provide an API key. Pass it as "
                               "'Authorization: Bearer <key>'.")
        key = match_key(keys, token)
        if key is None:
            raise Unauthorized("Incorrect API key provided.")
        tenant = "tenant:" + key.tenant + ("/header:" + proxied if proxied else "")
        return Caller(tenant, key.models, authenticated=True)
    if proxied:
        return Caller("header:" + proxied)
    if authorization:
        return Caller("key:" + hash_key(authorization))
    return Caller(ANONYMOUS) if share_anonymous else NOBODY


def check_model(caller: Caller, model: str, alias: str) -> None:
    """403 for a model the caller's key may not use (the routing alias is always allowed:
    routing then picks among the allowed models)."""
    if model != alias and not caller.may_use(model):
        raise Forbidden(f"This API key may not use the model `{model}`.")


# --------------------------------------------------------------------------- the shell


class Gate:
    """The current keys (re-read when the keys file changes) and the trust rule."""

    def __init__(self, config: AuthConfig, *, partition_header: str | None,
                 share_anonymous: bool, known_models: Collection[str],
                 environ: Mapping[str, str] | None = None,
                 clock: Any = time.monotonic) -> None:
        self.config = config
        self.partition_header = partition_header
        self.share_anonymous = share_anonymous
        self._known = tuple(known_models)
        self._env = os.environ if environ is None else environ
        self._clock = clock
        secret = self._env.get(config.proxy_secret_env) if config.proxy_secret_env else None
        if config.proxy_secret_env and not secret:
            raise ConfigError([f"auth.proxy_secret_env: environment variable "
                               f"{config.proxy_secret_env} is not set; set it or remove the field"])
        self.trust = TrustRule(parse_networks(config.trusted_proxies), secret)
        self._file_keys: list[ClientKey] = []
        self._env_keys: list[ClientKey] = []
        self._mtime: float | None = None
        self._checked = 0.0
        if config.keys_env:
            value = self._env.get(config.keys_env)
            if value is None:
                raise ConfigError([f"auth.keys_env: environment variable {config.keys_env} is "
                                   "not set; set it to `tenant=key,...` or remove the field"])
            self._env_keys = parse_keys_env(value, f"auth.keys_env ({config.keys_env})")
        if config.keys_file is not None:
            self._file_keys = self._read_file()
            self._checked = self._clock()

    @classmethod
    def for_config(cls, config: Config, environ: Mapping[str, str] | None = None) -> Gate:
        return cls(config.auth, partition_header=config.cache.partition_header,
                   share_anonymous=config.cache.share_anonymous, known_models=config.models,
                   environ=environ)

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    def describe(self) -> str:
        """One line for the start-up log."""
        if not self.enabled:
            return ("auth: off - any client may call any model; the cache tenant is a hash of "
                    "the client's Authorization header (add an `auth` section to require keys)")
        return f"auth: on - {len(self.keys())} client key(s)"

    def _read_file(self) -> list[ClientKey]:
        path = self.config.keys_file
        assert path is not None
        where = f"auth.keys_file ({path})"
        try:
            self._mtime = path.stat().st_mtime
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError([f"{where}: cannot read it: {e.strerror or e}"]) from e
        except yaml.YAMLError as e:
            raise ConfigError([f"{where}: not YAML: {e}"]) from e
        return parse_keys_document(data, where, self._known)

    def _maybe_reload(self) -> None:
        path = self.config.keys_file
        now = self._clock()
        if path is None or now - self._checked < self.config.reload_interval_s:
            return
        self._checked = now
        try:
            if path.stat().st_mtime == self._mtime:
                return
            self._file_keys = self._read_file()
            log.warning("auth: keys file reloaded: %d key(s)", len(self._file_keys))
        except (OSError, ConfigError) as e:  # keep serving with the keys we have
            log.error("auth: keys file not reloaded, the previous keys stay: %s", e)

    def keys(self) -> list[ClientKey] | None:
        if not self.enabled:
            return None
        self._maybe_reload()
        return self._file_keys + self._env_keys

    def identify(self, headers: Mapping[str, str], peer: str | None) -> Caller:
        return identify(headers, peer, keys=self.keys(), trust=self.trust,
                        partition_header=self.partition_header,
                        share_anonymous=self.share_anonymous)
