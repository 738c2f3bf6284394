"""Which Dask clusters zcore connects to, and how (TLS): the server owner's settings.

Trust model
    A Dask scheduler and its workers can run code in the process that connects to them: their
    answers are unpickled there (``distributed`` unpickles some messages whatever the client's
    ``deserializers``), and they receive the embedding matrix. Connecting to a cluster is
    trusting it as much as the code of the process. So:

    - **the operator** (the App, or ``foo.execute_operator``) connects only to ``local`` (a
      ``LocalCluster`` started for the run) or to a scheduler address that the server's owner
      lists in :data:`SCHEDULERS_ENV`; anything else is refused before anything is read;
    - **Python callers** (``zcore_scores(..., backend="dask", client=...)``,
      ``compute_zcore(...)``) run their own code, and may pass any ``distributed.Client`` or
      address: the list does not apply to them.

TLS
    ``tls://`` (and ``wss://``) addresses need the cluster's CA and a client certificate, from
    :data:`TLS_CA_ENV`, :data:`TLS_CERT_ENV` and :data:`TLS_KEY_ENV`; a Python caller can
    instead pass ``distributed.Client(address, security=distributed.security.Security(...))``.
    Dask checks that the peer's certificate is signed by that CA (not its host name): use a CA
    dedicated to the cluster.

Nothing here imports FiftyOne; ``distributed`` is imported only when a Dask run is checked or
connected.
"""

import os
import re
import ssl

#: Environment variable of the server: comma-separated scheduler addresses that the operator may
#: connect to (``local`` is always allowed).
SCHEDULERS_ENV = "ZCORE_DASK_SCHEDULERS"
#: Environment variables of the TLS credentials used for ``tls://`` addresses: the CA that signed
#: the cluster's certificates, this client's certificate, and its key (unless the certificate
#: file holds it).
TLS_CA_ENV = "ZCORE_DASK_TLS_CA_FILE"
TLS_CERT_ENV = "ZCORE_DASK_TLS_CERT"
TLS_KEY_ENV = "ZCORE_DASK_TLS_KEY"
#: The choice that starts a ``LocalCluster`` for the run (always allowed).
LOCAL = "local"

#: Address schemes that need TLS credentials.
TLS_SCHEMES = ("tls", "wss")
_ADDRESS = re.compile(r"^(?:([A-Za-z][A-Za-z0-9+.-]*)://)?([^\s,/]+)/?$")


def normalize_address(address):
    """A scheduler address in one spelling: ``scheme://host:port``, scheme and host lower-case.

    ``host:port`` without a scheme is ``tcp://host:port``, as Dask reads it.

    Parameters
    ----------
    address : str
        A Dask scheduler address, e.g. ``"tcp://10.0.0.5:8786"`` or ``"tls://scheduler:8786"``.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        If ``address`` is not a string of that form.
    """
    match = _ADDRESS.match(address.strip()) if isinstance(address, str) else None
    if match is None:
        raise ValueError(
            f"{address!r} is not a Dask scheduler address; write it as scheme://host:port, e.g. "
            "tcp://10.0.0.5:8786 or tls://scheduler.example:8786"
        )
    scheme, rest = match.groups()
    return f"{(scheme or 'tcp').lower()}://{rest.lower()}"


def allowed_schedulers(environ=None):
    """The scheduler addresses the server's owner allows, from :data:`SCHEDULERS_ENV`.

    Parameters
    ----------
    environ : mapping, default=None
        Where to read the variable; ``None`` means ``os.environ``.

    Returns
    -------
    list of str
        Normalized addresses (:func:`normalize_address`), in the variable's order, without
        duplicates or ``local``; empty when the variable is unset or empty.

    Raises
    ------
    ValueError
        If an entry is not an address; the message names the variable and the entry.
    """
    environ = os.environ if environ is None else environ
    out = []
    for entry in (environ.get(SCHEDULERS_ENV) or "").split(","):
        entry = entry.strip()
        if not entry or entry.lower() == LOCAL:
            continue
        try:
            address = normalize_address(entry)
        except ValueError as e:
            raise ValueError(f"{SCHEDULERS_ENV} holds a bad entry: {e}") from None
        if address not in out:
            out.append(address)
    return out


def scheduler_choices(environ=None):
    """``["local", *allowed_schedulers()]``: what the operator's form offers."""
    return [LOCAL, *allowed_schedulers(environ)]


def check_operator_scheduler(value, *, environ=None):
    """The cluster an operator run may use: ``None``, ``"local"`` or an allowed address.

    Called by the ``compute_zcore`` operator before it reads or writes anything.

    Parameters
    ----------
    value : str or None
        The operator's ``dask_scheduler`` parameter (``None`` or ``""``: no Dask).
    environ : mapping, default=None
        Where to read :data:`SCHEDULERS_ENV` and the TLS variables; ``None``: ``os.environ``.

    Returns
    -------
    str or None
        ``None`` (score in process), ``"local"``, or the normalized allowed address; for a
        ``tls://`` address the TLS variables have been checked too.

    Raises
    ------
    ValueError
        For an address that :data:`SCHEDULERS_ENV` does not list (the message says how the
        server's owner allows one), a non-string value, or unusable TLS settings.
    ImportError
        If ``distributed`` is not installed (the message says what to install).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ValueError(
            f"dask_scheduler must be a string ('{LOCAL}' or an address listed in "
            f"{SCHEDULERS_ENV}); got {type(value).__name__}"
        )
    if value.strip().lower() == LOCAL:
        _require_dask()
        return LOCAL
    allowed = allowed_schedulers(environ)
    try:
        address = normalize_address(value)
    except ValueError:
        address = None
    if address is None or address not in allowed:
        listed = ", ".join(allowed) if allowed else f"none: {SCHEDULERS_ENV} is not set"
        raise ValueError(
            f"Dask scheduler {value!r} is not allowed on this server. A Dask cluster can run code "
            "in the process that connects to it and receives the embeddings, so the operator "
            f"connects only to '{LOCAL}' or to the addresses that the server's owner lists in "
            f"{SCHEDULERS_ENV} (comma-separated; allowed now: {listed}). Choose one of those, or "
            "call zcore.compute_zcore(..., backend='dask', client=...) from your own Python "
            "process"
        )
    _require_dask()
    client_security(address, environ=environ)  # TLS settings checked before anything is read
    return address


def _require_dask():
    from .dask_backend import require_dask

    return require_dask()


def security_from_env(environ=None):
    """The ``distributed.security.Security`` of the TLS variables, or ``None`` when unset.

    Parameters
    ----------
    environ : mapping, default=None
        Where to read :data:`TLS_CA_ENV`, :data:`TLS_CERT_ENV`, :data:`TLS_KEY_ENV`; ``None``
        means ``os.environ``.

    Returns
    -------
    distributed.security.Security or None
        With ``require_encryption=True``; its TLS context has been built once (files readable,
        certificate and key matching).

    Raises
    ------
    ValueError
        If only some variables are set, a file is missing, or the files cannot be loaded.
    ImportError
        If ``distributed`` is not installed.
    """
    environ = os.environ if environ is None else environ
    ca, cert, key = (environ.get(name) or None for name in (TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV))
    if ca is None and cert is None and key is None:
        return None
    if ca is None or cert is None:
        raise ValueError(
            f"Dask TLS needs both {TLS_CA_ENV} (the CA that signed the cluster's certificates) "
            f"and {TLS_CERT_ENV} (this client's certificate; its key in {TLS_KEY_ENV} unless the "
            f"certificate file holds it); set {'both' if ca is None and cert is None else 'the other'}"
        )
    for name, path in ((TLS_CA_ENV, ca), (TLS_CERT_ENV, cert), (TLS_KEY_ENV, key)):
        if path is not None and not os.path.isfile(path):
            raise ValueError(f"{name}={path!r} is not a file; point it to a PEM file")
    security = _require_dask().security.Security(
        tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True
    )
    try:
        security.get_connection_args("client")  # builds the SSL context: loads every file
    except (ssl.SSLError, OSError, ValueError) as e:
        raise ValueError(
            f"could not load the Dask TLS files ({TLS_CA_ENV}={ca!r}, {TLS_CERT_ENV}={cert!r}, "
            f"{TLS_KEY_ENV}={key!r}): {e}; they must be PEM files, the key matching the "
            "certificate"
        ) from None
    return security


def client_security(address, *, environ=None):
    """The ``Security`` to connect to ``address`` with: ``None`` for plain addresses, the TLS
    variables' for ``tls://`` and ``wss://`` ones.

    Raises
    ------
    ValueError
        For a TLS address without TLS variables (the message says what to set), or unusable
        TLS settings.
    """
    scheme = address.split("://", 1)[0].lower() if "://" in address else "tcp"
    if scheme not in TLS_SCHEMES:
        return None
    security = security_from_env(environ)
    if security is None:
        raise ValueError(
            f"{address!r} is a TLS address and no TLS credentials are configured: set "
            f"{TLS_CA_ENV} and {TLS_CERT_ENV} (and {TLS_KEY_ENV}) to the cluster's CA and this "
            "client's certificate and key, or, from Python, pass "
            f"client=distributed.Client({address!r}, security=distributed.security.Security(...))"
        )
    return security


def check_client(client):
    """Check a ``client`` argument of ``backend="dask"`` without connecting.

    Parameters
    ----------
    client : distributed.Client, str or None
        A client (used as it is), a scheduler address (its TLS settings are checked), or
        ``None`` (a ``LocalCluster``).

    Raises
    ------
    TypeError
        For anything else.
    ValueError
        For a bad address or unusable TLS settings.
    """
    if client is None:
        return
    if isinstance(client, str):
        client_security(client)
        return
    if not isinstance(client, _require_dask().Client):
        raise TypeError(
            "client must be a distributed.Client, a scheduler address such as "
            f"'tcp://host:8786', or None for a LocalCluster; got {type(client).__name__}"
        )


def connect(address):
    """A ``distributed.Client`` of ``address``, over TLS for ``tls://`` addresses
    (:func:`client_security`). No allow-list here: the operator checks it first."""
    distributed = _require_dask()
    security = client_security(address)
    if security is None:
        return distributed.Client(address)
    return distributed.Client(address, security=security)
