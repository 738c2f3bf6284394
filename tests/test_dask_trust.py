"""Which Dask clusters zcore connects to (issue 12, item 1): the operator's allow-list, TLS, and a
real hostile worker.

A cluster can run code in the process that connects to it: a worker preloaded with
``HOSTILE_PRELOAD`` answers ``Shard.nearest`` with an object whose unpickling runs a shell
command (it creates a marker file). Through the operator, an address the server's owner did not
list in ``ZCORE_DASK_SCHEDULERS`` is refused before anything is read, and the marker never
appears; with the address listed, the command runs (by design: only list clusters you control)
and the run fails on the malformed answer without writing anything. TLS runs on a real
``LocalCluster`` over ``tls://`` with certificates made here.
"""

import datetime
import ipaddress
import os

import numpy as np
import pytest
from fiftyone.operators.executor import ExecutionError

from zcore.core import dask_access as da

distributed = pytest.importorskip("distributed")

import fiftyone.operators as foo  # noqa: E402
from conftest import run_queued  # noqa: E402

COMPUTE = "@zcore/zcore/compute_zcore"
FAST = {"n_samples": 300, "redund_nn": 10, "seed": 3}
ENV = (da.SCHEDULERS_ENV, da.TLS_CA_ENV, da.TLS_CERT_ENV, da.TLS_KEY_ENV)

HOSTILE_PRELOAD = """
import os
import shlex

from zcore.core import dask_backend

MARKER = {marker!r}


class Payload:
    def __reduce__(self):  # what the client runs when it unpickles this answer
        return (os.system, ("touch " + shlex.quote(MARKER),))


def nearest(self, dims, coords):
    return Payload()


dask_backend.Shard.nearest = nearest
"""


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


# --- the allow-list -----------------------------------------------------------------------------


def test_allowed_schedulers_are_normalized_from_the_environment():
    env = {da.SCHEDULERS_ENV: " host:8786, TCP://Host:8786,local,, tls://10.0.0.5:8786/ "}
    assert da.allowed_schedulers(env) == ["tcp://host:8786", "tls://10.0.0.5:8786"]
    assert da.scheduler_choices(env) == ["local", "tcp://host:8786", "tls://10.0.0.5:8786"]
    assert da.allowed_schedulers({}) == []
    with pytest.raises(ValueError, match=f"{da.SCHEDULERS_ENV} holds a bad entry.*'a b'"):
        da.allowed_schedulers({da.SCHEDULERS_ENV: "tcp://ok:1,a b"})


@pytest.mark.parametrize(
    "value,want",
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("local", "local"),
        (" LOCAL ", "local"),
        ("tcp://sched:8786", "tcp://sched:8786"),
        ("sched:8786", "tcp://sched:8786"),  # Dask's default scheme, same address
        ("TCP://SCHED:8786", "tcp://sched:8786"),
    ],
)
def test_operator_scheduler_accepts_local_and_listed_addresses(value, want):
    env = {da.SCHEDULERS_ENV: "tcp://sched:8786"}
    assert da.check_operator_scheduler(value, environ=env) == want


@pytest.mark.parametrize(
    "env,value,match",
    [
        ({}, "tcp://evil:8786", f"not allowed.*{da.SCHEDULERS_ENV}.*allowed now: none"),
        (
            {da.SCHEDULERS_ENV: "tcp://sched:8786"},
            "tcp://sched:8787",
            "'tcp://sched:8787' is not allowed.*allowed now: tcp://sched:8786",
        ),
        ({da.SCHEDULERS_ENV: "tcp://sched:8786"}, "tls://sched:8786", "not allowed"),
        ({da.SCHEDULERS_ENV: "tcp://sched:8786"}, "not an address!", "not allowed"),
        ({}, 8786, "dask_scheduler must be a string"),
        (
            {da.SCHEDULERS_ENV: "tls://sched:8786"},
            "tls://sched:8786",
            f"TLS address and no TLS credentials.*{da.TLS_CA_ENV}",
        ),
    ],
)
def test_operator_scheduler_refusals_say_what_to_do(env, value, match):
    with pytest.raises(ValueError, match=match):
        da.check_operator_scheduler(value, environ=env)


def test_form_offers_only_local_and_the_allowed_addresses(make_dataset, monkeypatch):
    from fiftyone.operators.executor import ExecutionContext

    ds, _ = make_dataset(10, 3)
    op = foo.get_operator(COMPUTE)

    def field():
        params = {"advanced": True}  # the Dask input is an advanced option
        ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": params})
        props = op.resolve_input(ctx).type.properties
        return props, props["dask_scheduler"]

    props, prop = field()
    assert prop.type.values == ["local"]  # nothing listed: a LocalCluster only, no free text
    assert [c.value for c in prop.view.choices] == ["local"]
    monkeypatch.setenv(da.SCHEDULERS_ENV, "tcp://a:8786,b:8786")
    props, prop = field()
    assert prop.type.values == ["local", "tcp://a:8786", "tcp://b:8786"]
    assert type(prop.view).__name__ == "Dropdown"
    assert "dask_schedulers_error" not in props
    monkeypatch.setenv(da.SCHEDULERS_ENV, "tcp://a:8786,x y")
    props, prop = field()
    assert prop.type.values == ["local"]
    assert "bad entry" in props["dask_schedulers_error"].view.label


def test_python_client_argument_is_checked_before_any_work():
    from zcore import zcore_scores

    X = np.random.default_rng(1).normal(size=(50, 4))
    with pytest.raises(TypeError, match="client must be a distributed.Client"):
        zcore_scores(X, n_samples=10, redund_nn=5, backend="dask", client=8786)
    with pytest.raises(ValueError, match=f"TLS address and no TLS credentials.*{da.TLS_CA_ENV}"):
        zcore_scores(X, n_samples=10, redund_nn=5, backend="dask", client="tls://127.0.0.1:1")


# --- a hostile cluster --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A real scheduler and one worker preloaded with HOSTILE_PRELOAD; yields (address, marker)."""
    tmp = tmp_path_factory.mktemp("hostile")
    marker = str(tmp / "pwned")
    preload = tmp / "hostile_preload.py"
    preload.write_text(HOSTILE_PRELOAD.format(marker=marker))
    cluster = distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        preload=[str(preload)],
    )
    yield cluster.scheduler_address, marker
    cluster.close()


def _delegated(ds, params):
    """Queue the compute operator as a delegated operation and run it here; the finished op."""
    r = foo.execute_operator(
        COMPUTE, ctx={"dataset": ds, "params": params}, request_delegation=True
    )
    assert r.error is None, r.error
    return run_queued(ds)


def test_operator_refuses_a_hostile_unlisted_cluster_before_reading(
    hostile, make_dataset, monkeypatch
):
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.executor import ExecutionContext

    address, marker = hostile
    assert not os.path.exists(marker)
    ds, _ = make_dataset(40, 4)
    params = {"embeddings": "embeddings", "dask_scheduler": address, **FAST}
    refused = f"not allowed on this server.*{da.SCHEDULERS_ENV}"
    # immediate, and asked to be delegated: refused by the form's check, nothing queued
    with pytest.raises(ExecutionError, match=refused):
        foo.execute_operator(COMPUTE, ctx={"dataset": ds, "params": params})
    with pytest.raises(ExecutionError, match=refused):
        foo.execute_operator(
            COMPUTE, ctx={"dataset": ds, "params": params}, request_delegation=True
        )
    assert DelegatedOperationService().list_operations(dataset_name=ds.name) == []
    # queued while listed, delisted before it runs: execute() checks again
    monkeypatch.setenv(da.SCHEDULERS_ENV, address)
    r = foo.execute_operator(
        COMPUTE, ctx={"dataset": ds, "params": params}, request_delegation=True
    )
    assert r.error is None, r.error
    monkeypatch.setenv(da.SCHEDULERS_ENV, "tcp://127.0.0.1:1")  # another one does not count
    op = run_queued(ds)
    assert op.run_state == "failed"
    assert "is not allowed on this server" in str(op.result.error)
    # execute() itself, without FiftyOne's validation of the form
    ctx = ExecutionContext(request_params={"dataset_name": ds.name, "params": params})
    with pytest.raises(ValueError, match=refused):
        foo.get_operator(COMPUTE).execute(ctx)
    ds.reload()
    assert not ds.has_sample_field("zcore_score") and ds.list_runs() == []
    assert not os.path.exists(marker)  # no connection was made: nothing ran here


def test_a_listed_hostile_cluster_runs_code_here_by_design(hostile, make_dataset, monkeypatch):
    """Why the list must hold only clusters you control: a listed cluster's answers are unpickled
    here, which runs its command before any check. The malformed answer then fails the run,
    and nothing is written."""
    from zcore import zcore_scores

    address, marker = hostile
    assert not os.path.exists(marker)
    ds, X = make_dataset(40, 4)
    monkeypatch.setenv(da.SCHEDULERS_ENV, address)
    params = {"embeddings": "embeddings", "dask_scheduler": address, **FAST}
    op = _delegated(ds, params)
    assert os.path.exists(marker)  # the hostile command ran in this process
    assert op.run_state == "failed"
    assert "answered Shard.nearest for shard 0 with (int)" in str(op.result.error)
    ds.reload()
    assert not ds.has_sample_field("zcore_score") and ds.list_runs() == []
    os.remove(marker)
    # Python callers are not held to the list: the same happens, and is documented
    with pytest.raises(ValueError, match="another zcore version.*not one you control"):
        zcore_scores(X, backend="dask", client=address, **FAST)
    assert os.path.exists(marker)
    os.remove(marker)


def _good_nearest(rows=4, dim=2, lo=10):
    return (np.zeros(rows), np.arange(lo, lo + rows, dtype=np.int64), np.zeros((rows, dim)))


@pytest.mark.parametrize(
    "answer,match",
    [
        (lambda a: list(a), "with \\(list\\), not 3 numpy array"),
        (lambda a: a[:2], "with \\(ndarray, ndarray\\), not 3"),
        (lambda a: (a[0].astype(np.float32), *a[1:]), "dtype float32 and shape \\(4,\\)"),
        (lambda a: (a[0], a[1].astype(float), a[2]), "dtype float64 and shape \\(4,\\)"),
        (lambda a: (a[0], a[1], a[2][:, :1]), "dtype float64 and shape \\(4, 1\\)"),
        (lambda a: (a[0], a[1] + 100, a[2]), "sample indices outside its rows"),
        (lambda a: (np.full(4, np.nan), a[1], a[2]), "NaN values"),
        (lambda a: (a[0].view(np.memmap), a[1], a[2]), "not 3 numpy array"),
    ],
)
def test_malformed_shard_answers_are_refused_with_a_message(answer, match):
    from zcore.core.dask_backend import _nearest_answer

    bounds = [0, 10, 20]
    got = _nearest_answer(_good_nearest(), bounds, 1, 4, 2)  # a well-formed one passes
    assert got[1].tolist() == [10, 11, 12, 13]
    with pytest.raises(ValueError, match=f"answered Shard.nearest for shard 1 {match}|{match}"):
        _nearest_answer(answer(_good_nearest()), bounds, 1, 4, 2)


def test_malformed_within_answers_are_refused():
    from zcore.core.dask_backend import _within_answer

    bounds = [0, 10]
    good = (np.array([1, 2]), np.zeros(3), np.array([1, 2, 3]))
    assert _within_answer(good, bounds, 0, 2)[0].tolist() == [1, 2]
    with pytest.raises(ValueError, match="counts that do not match its candidates"):
        _within_answer((np.array([1, 1]), np.zeros(3), np.array([1, 2, 3])), bounds, 0, 2)
    with pytest.raises(ValueError, match="counts that do not match"):
        _within_answer((np.array([-1, 4]), np.zeros(3), np.array([1, 2, 3])), bounds, 0, 2)
    with pytest.raises(ValueError, match="sample indices outside its rows"):
        _within_answer((np.array([1, 2]), np.zeros(3), np.array([1, 2, 10])), bounds, 0, 2)


# --- TLS ----------------------------------------------------------------------------------------


def _pki(tmp, names):
    """A CA (``ca.pem``) and, per name, ``<name>.pem`` + ``<name>-key.pem`` signed by it."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def usage(ca):
        return x509.KeyUsage(
            digital_signature=True,
            content_commitment=False,
            key_encipherment=not ca,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        )

    def build(subject, key, issuer, issuer_key, ca):
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(usage(ca), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
            )
        )
        if not ca:
            b = b.add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            ).add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return b.sign(issuer_key, hashes.SHA256())

    def pem(cert):
        return cert.public_bytes(serialization.Encoding.PEM)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    (tmp / "ca.pem").write_bytes(pem(build("zcore test CA", ca_key, "zcore test CA", ca_key, True)))
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        (tmp / f"{name}.pem").write_bytes(pem(build(name, key, "zcore test CA", ca_key, False)))
        (tmp / f"{name}-key.pem").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return {n: (str(tmp / f"{n}.pem"), str(tmp / f"{n}-key.pem")) for n in names} | {
        "ca": str(tmp / "ca.pem")
    }


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """A LocalCluster over tls:// (encryption required); yields (address, client's PEM files, a
    foreign CA's client files)."""
    files = _pki(tmp_path_factory.mktemp("pki"), ["cluster", "client"])
    other = _pki(tmp_path_factory.mktemp("other-pki"), ["client"])
    cert, key = files["cluster"]
    security = distributed.security.Security(
        tls_ca_file=files["ca"],
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
        tls_client_cert=cert,
        tls_client_key=key,
        require_encryption=True,
    )
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        protocol="tls://",
        security=security,
    )
    assert cluster.scheduler_address.startswith("tls://")
    yield cluster.scheduler_address, files, other
    cluster.close()


def _use_tls(monkeypatch, files):
    cert, key = files["client"]
    monkeypatch.setenv(da.TLS_CA_ENV, files["ca"])
    monkeypatch.setenv(da.TLS_CERT_ENV, cert)
    monkeypatch.setenv(da.TLS_KEY_ENV, key)


def test_tls_cluster_scores_equal_local_from_python_and_the_operator(
    tls_cluster, make_dataset, monkeypatch
):
    from zcore import zcore_scores

    address, files, _ = tls_cluster
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 16)).astype(np.float32)
    kw = {"n_samples": 800, "redund_nn": 30, "seed": 5}
    local = zcore_scores(X, **kw)
    with pytest.raises(ValueError, match=f"TLS address and no TLS credentials.*{da.TLS_CA_ENV}"):
        zcore_scores(X, backend="dask", client=address, **kw)
    _use_tls(monkeypatch, files)
    assert np.array_equal(zcore_scores(X, backend="dask", client=address, **kw), local)
    # a client built by the caller with its own Security works as well
    security = da.security_from_env()
    with distributed.Client(address, security=security) as c:
        assert np.array_equal(zcore_scores(X, backend="dask", client=c, **kw), local)

    ds, X = make_dataset(80, 6)
    monkeypatch.setenv(da.SCHEDULERS_ENV, address)
    op = _delegated(ds, {"embeddings": "embeddings", "dask_scheduler": address, **FAST})
    assert op.run_state == "completed", op.result and op.result.error
    ds.reload()
    np.testing.assert_array_equal(np.array(ds.values("zcore_score")), zcore_scores(X, **FAST))


def test_tls_operator_without_credentials_is_refused_before_reading(
    tls_cluster, make_dataset, monkeypatch
):
    address, _, _ = tls_cluster
    ds, _ = make_dataset(20, 3)
    monkeypatch.setenv(da.SCHEDULERS_ENV, address)
    params = {"embeddings": "embeddings", "dask_scheduler": address, **FAST}
    with pytest.raises(
        ExecutionError, match=f"no TLS credentials are configured: set {da.TLS_CA_ENV}"
    ):
        foo.execute_operator(
            COMPUTE, ctx={"dataset": ds, "params": params}, request_delegation=True
        )
    ds.reload()
    assert not ds.has_sample_field("zcore_score")


def test_tls_client_of_another_ca_cannot_connect(tls_cluster, monkeypatch):
    """The cluster's CA is checked: a client certificate from another CA is not let in."""
    import dask

    address, _, other = tls_cluster
    _use_tls(monkeypatch, other)
    with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
        with pytest.raises(OSError):
            da.connect(address)


def test_tls_settings_are_checked(tmp_path, monkeypatch):
    files = _pki(tmp_path, ["client"])
    cert, key = files["client"]
    assert da.security_from_env({}) is None
    with pytest.raises(ValueError, match=f"needs both {da.TLS_CA_ENV}.*set the other"):
        da.security_from_env({da.TLS_CA_ENV: files["ca"]})
    with pytest.raises(ValueError, match=f"{da.TLS_CERT_ENV}='/nope.pem' is not a file"):
        da.security_from_env({da.TLS_CA_ENV: files["ca"], da.TLS_CERT_ENV: "/nope.pem"})
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ValueError, match="could not load the Dask TLS files"):
        da.security_from_env({da.TLS_CA_ENV: files["ca"], da.TLS_CERT_ENV: str(bad)})
    env = {da.TLS_CA_ENV: files["ca"], da.TLS_CERT_ENV: cert, da.TLS_KEY_ENV: key}
    security = da.security_from_env(env)
    assert security.require_encryption and security.tls_client_cert == cert
    assert da.client_security("tcp://plain:8786", environ=env) is None  # TLS is for tls:// only
