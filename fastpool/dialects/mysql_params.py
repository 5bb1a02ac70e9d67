"""A mysql:// URL's query parameters, checked and translated for the driver that serves it.

Every parameter is checked when the pool is opened: one the driver does not take (a typo,
``ssl=true``) is a ConfigError naming it and listing the accepted ones, never a TypeError
at the first connect and never dropped without a word. Booleans are read from their URL
spelling (``true``/``false``/``1``/``0``/``yes``/``no``).

TLS is asked for with the names SQLAlchemy's MySQL URLs use, and one URL means the same
protection whichever driver serves it:

* ``ssl_mode``: ``DISABLED``, ``PREFERRED``, ``REQUIRED`` (encrypted; with a CA given, the
  server's certificate chain is checked too, as MySQL's own client does), ``VERIFY_CA``
  (the chain is checked against the CA), ``VERIFY_IDENTITY`` (the chain and the host name);
  any case;
* ``ssl_ca`` (a PEM file), ``ssl_capath`` (a directory of them), ``ssl_cert`` and
  ``ssl_key`` (a client certificate), ``ssl_cipher``;
* ``ssl_verify_cert``, ``ssl_verify_identity`` and ``ssl_check_hostname``: the older
  spellings of VERIFY_CA and VERIFY_IDENTITY.

Without ``ssl_mode``: the verify flags decide, else a CA means VERIFY_CA, else a client
certificate or cipher means REQUIRED, else no TLS is asked for. VERIFY_CA or
VERIFY_IDENTITY without a CA use the system's trust store.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
TLS_PARAMS = ("ssl_mode", "ssl_ca", "ssl_capath", "ssl_cert", "ssl_key", "ssl_cipher",
              "ssl_verify_cert", "ssl_verify_identity", "ssl_check_hostname")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
# Parameters of both drivers that are booleans.
BOOL_PARAMS = frozenset({"compress", "local_infile", "autocommit", "use_unicode",
                         "binary_prefix", "multi_statements",
                         "ssl_verify_cert", "ssl_verify_identity", "ssl_check_hostname"})
# Parameters the drivers take as ints (a str there is a TypeError deep in the driver).
INT_PARAMS = frozenset({"port", "connect_timeout", "read_timeout", "write_timeout",
                        "client_flag"})
# What a URL can give besides TLS: mysqlclient's connect() keywords that take a string or a
# number (MySQLdb.connections.Connection and _mysql.connect).
MYSQLCLIENT_PARAMS = frozenset({
    "host", "user", "password", "database", "port", "unix_socket", "charset", "collation",
    "connect_timeout", "read_timeout", "write_timeout", "compress", "named_pipe",
    "init_command", "read_default_file", "read_default_group", "use_unicode", "sql_mode",
    "auth_plugin", "client_flag", "multi_statements", "server_public_key_path",
    "local_infile", "local_infile_dir", "autocommit", "binary_prefix",
})
# PyMySQL's, read off its Connection signature less what a URL cannot carry (objects) and
# its own TLS keywords (the TLS names above are translated into an SSLContext instead).
PYMYSQL_EXCLUDED = frozenset({"self", "conv", "cursorclass", "auth_plugin_map", "ssl",
                              "ssl_ca", "ssl_cert", "ssl_key", "ssl_disabled",
                              "ssl_key_password", "ssl_verify_cert", "ssl_verify_identity",
                              "passwd", "db", "defer_connect"})


@dataclass(frozen=True)
class TLS:
    """What a URL asked of TLS; mode None: nothing."""

    mode: str | None = None
    ca: str | None = None
    capath: str | None = None
    cert: str | None = None
    key: str | None = None
    cipher: str | None = None

    @property
    def verifies(self) -> bool:
        """The server's certificate chain is checked."""
        return self.mode in ("VERIFY_CA", "VERIFY_IDENTITY") or (
            self.mode == "REQUIRED" and (self.ca is not None or self.capath is not None))

    def trust(self) -> tuple[str | None, str | None]:
        """(cafile, capath) to verify with: the ones given, else those of the system's store
        that exist (OpenSSL's defaults name paths a distribution may not have)."""
        if self.ca is not None or self.capath is not None:
            return self.ca, self.capath
        paths = ssl.get_default_verify_paths()
        cafile = paths.cafile if paths.cafile and os.path.isfile(paths.cafile) else None
        capath = paths.capath if paths.capath and os.path.isdir(paths.capath) else None
        return cafile, capath


def as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false (or 1/0, yes/no), got {value!r}")


def split(kwargs: dict[str, Any], accepted: frozenset[str], driver: str) -> tuple[dict[str, Any], TLS]:
    """(the driver's own parameters, checked and typed; the TLS asked for)."""
    unknown = sorted(k for k in kwargs if k not in accepted and k not in TLS_PARAMS)
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        hint = " (TLS: ssl_mode=REQUIRED, or ssl_ca=... with ssl_mode=VERIFY_IDENTITY)" if "ssl" in unknown else ""
        raise ConfigError(
            f"connect parameter {names} is not taken by {driver}{hint}; accepted: "
            f"{', '.join(sorted(accepted | set(TLS_PARAMS)))}")
    for k in INT_PARAMS & kwargs.keys():
        if isinstance(kwargs[k], bool) or not isinstance(kwargs[k], int):
            raise ConfigError(f"connect parameter {k!r} must be an integer, got {kwargs[k]!r}")
    params = {k: (as_bool(k, v) if k in BOOL_PARAMS else v) for k, v in kwargs.items()
              if k not in TLS_PARAMS}
    return params, _tls(kwargs)


def _tls(kwargs: dict[str, Any]) -> TLS:
    mode = kwargs.get("ssl_mode")
    if mode is not None:
        mode = str(mode).strip().upper()
        if mode not in SSL_MODES:
            raise ConfigError(f"ssl_mode must be one of {', '.join(SSL_MODES)} (any case), got {kwargs['ssl_mode']!r}")
    identity = any(as_bool(k, kwargs[k]) for k in ("ssl_verify_identity", "ssl_check_hostname") if k in kwargs)
    verify = "ssl_verify_cert" in kwargs and as_bool("ssl_verify_cert", kwargs["ssl_verify_cert"])
    files = {k: kwargs.get(f"ssl_{k}") for k in ("ca", "capath", "cert", "key")}
    cipher = kwargs.get("ssl_cipher")
    for k, path in files.items():
        if path is None:
            continue
        path = files[k] = os.path.expanduser(str(path))
        exists = os.path.isdir(path) if k == "capath" else os.path.isfile(path)
        if not exists:
            # The key's path is not echoed: it says where a secret lives.
            where = "" if k == "key" else f": {path!r}"
            raise ConfigError(f"ssl_{k} names no readable {'directory' if k == 'capath' else 'file'}{where}")
    given = any(v is not None for v in files.values()) or cipher is not None
    if mode == "DISABLED":
        if given or identity or verify:
            raise ConfigError("ssl_mode=DISABLED contradicts the other ssl_* parameters given")
        return TLS(mode)
    strictness = {None: 0, "PREFERRED": 1, "REQUIRED": 2, "VERIFY_CA": 3, "VERIFY_IDENTITY": 4}
    implied = ("VERIFY_IDENTITY" if identity else "VERIFY_CA" if verify
               else "VERIFY_CA" if files["ca"] or files["capath"] else "REQUIRED" if given else None)
    if mode is None or strictness[implied] > strictness[mode]:
        mode = implied  # the stricter of what the mode and the flags ask
    return TLS(mode, files["ca"], files["capath"], files["cert"], files["key"],
               None if cipher is None else str(cipher))


def mysqlclient_tls(tls: TLS) -> dict[str, Any]:
    """mysqlclient's keywords: an ``ssl`` dict (mysql_ssl_set) and ``ssl_mode``."""
    if tls.mode is None:
        return {}
    if tls.mode == "DISABLED":
        return {"ssl_mode": "DISABLED"}
    given = {"ca": tls.ca, "capath": tls.capath, "cert": tls.cert, "key": tls.key,
             "cipher": tls.cipher}
    if tls.mode in ("VERIFY_CA", "VERIFY_IDENTITY"):
        given["ca"], given["capath"] = tls.trust()
    # libmariadb 3.3 ignores PREFERRED, and treats REQUIRED as "TLS where the server offers
    # it" (seen here): so PREFERRED is sent as REQUIRED, and REQUIRED is enforced after the
    # connect by the dialect, which reads the session's cipher.
    mode = "REQUIRED" if tls.mode == "PREFERRED" else tls.mode
    return {"ssl": {k: v for k, v in given.items() if v is not None}, "ssl_mode": mode}


def ssl_context(tls: TLS) -> ssl.SSLContext | None:
    """An SSLContext that checks what the mode promises (PyMySQL, and the asyncio drivers)."""
    if tls.mode is None or tls.mode == "DISABLED":
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.verifies:
        if tls.ca is not None or tls.capath is not None:
            ctx.load_verify_locations(cafile=tls.ca, capath=tls.capath)
        else:
            ctx.load_default_certs()  # the system's trust store
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.check_hostname = tls.mode == "VERIFY_IDENTITY"
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if tls.cert is not None:
        try:
            ctx.load_cert_chain(tls.cert, tls.key)
        except (ssl.SSLError, OSError):
            raise ConfigError("ssl_cert / ssl_key could not be loaded as a certificate and"
                              " its private key") from None
    if tls.cipher is not None:
        try:
            ctx.set_ciphers(tls.cipher)
        except ssl.SSLError:
            raise ConfigError(f"ssl_cipher {tls.cipher!r} names no cipher this Python's OpenSSL has") from None
    return ctx
