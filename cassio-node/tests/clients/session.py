"""A redis-py session against a running Cassio node, one of the real-client
matrix's (cassio-node/tests/real_clients.rs drives it; see docs/testing.md).

Prints `ok CHECK` for every check passed and exits 0; any failure raises
(exit 1 with the traceback). Each check is a function registered in CHECKS.
The sessions run one after another against the same node, each under its
own key prefix (`--prefix`).

Usage: session.py --port P --tls-port T --ca CA.pem --user U --password PW
                  [--protocol 2|3] [--prefix KEYPREFIX]
"""

import argparse
import sys
import threading
import time

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def connect(a, **kw):
    opts = dict(host=a.host, port=a.port, username=a.user, password=a.password,
                socket_timeout=20, socket_connect_timeout=10)
    if a.protocol is not None:
        opts["protocol"] = a.protocol
    opts.update(kw)
    return redis.Redis(**opts)


@check
def connect_handshake(a, r):
    # redis-py's connect: HELLO (RESP3) or AUTH, then CLIENT SETINFO.
    assert r.ping() is True
    assert r.echo(b"hi") == b"hi"
    assert r.client_setname("cassio-session") is True
    assert r.client_getname() in (b"cassio-session", "cassio-session")
    assert isinstance(r.client_id(), int)
    # The protocol the connection really speaks, and what redis-py
    # announced (CLIENT SETINFO), as the server saw them.
    info = r.client_info()
    want = 3 if a.protocol in (None, 3) else 2
    assert int(info["resp"]) == want, info
    assert info["lib-name"].startswith("redis-py"), info
    assert info["user"] == a.user, info


@check
def get_set_del(a, r):
    k = a.prefix + "k"
    assert r.set(k, b"v1") is True
    assert r.get(k) == b"v1"
    assert r.exists(k) == 1
    assert r.delete(k) == 1
    assert r.get(k) is None
    assert r.delete(k) == 0


@check
def binary_values(a, r):
    k = a.prefix + "bin"
    value = bytes(range(256))
    assert r.set(k, value) is True
    assert r.get(k) == value
    binkey = a.prefix.encode() + bytes(range(256))
    assert r.set(binkey, b"x") is True
    assert r.get(binkey) == b"x"


@check
def one_mib_value(a, r):
    k = a.prefix + "big"
    value = bytes(i * 7 % 256 for i in range(1 << 20))
    assert r.set(k, value) is True
    assert r.get(k) == value


@check
def pipeline_1000(a, r):
    p = r.pipeline(transaction=False)
    for i in range(500):
        p.set(f"{a.prefix}p{i}", str(i))
    for i in range(500):
        p.get(f"{a.prefix}p{i}")
    out = p.execute()
    assert len(out) == 1000
    assert all(x is True for x in out[:500]), out[:5]
    assert out[500:] == [str(i).encode() for i in range(500)]


@check
def mget_mset(a, r):
    pairs = {f"{a.prefix}m{i}": f"v{i}" for i in range(50)}
    assert r.mset(pairs) is True
    got = r.mget(list(pairs) + [a.prefix + "missing"])
    assert got == [v.encode() for v in pairs.values()] + [None]


@check
def unknown_command(a, r):
    try:
        r.execute_command("NOSUCHCMD", "x")
    except redis.ResponseError as e:
        assert "nosuchcmd" in str(e).lower(), e
    else:
        raise AssertionError("NOSUCHCMD was accepted")
    # The same connection still answers.
    assert r.ping() is True


@check
def auth_ok_and_failure(a, r):
    assert connect(a).ping() is True
    # redis-py retries connection errors (AuthenticationError is one) with
    # backoff by default: once is enough to see the refusal.
    once = Retry(NoBackoff(), 0)
    bad = connect(a, password=a.password + "-wrong", retry=once)
    try:
        bad.ping()
    except redis.AuthenticationError as e:
        assert "WRONGPASS" in str(e) or "invalid" in str(e).lower(), e
    else:
        raise AssertionError("a wrong password was accepted")
    anon = connect(a, username=None, password=None, retry=once)
    try:
        anon.get(a.prefix + "k")
    except redis.AuthenticationError:
        pass
    except redis.ResponseError as e:
        assert "NOAUTH" in str(e), e
    else:
        raise AssertionError("a command without AUTH was answered")


@check
def tls(a, r):
    t = connect(a, port=a.tls_port, ssl=True, ssl_ca_certs=a.ca)
    k = a.prefix + "tls"
    assert t.set(k, bytes(range(256))) is True
    assert t.get(k) == bytes(range(256))
    assert t.delete(k) == 1


def text(v):
    """A reply as str: redis-py answers bytes or str depending on the
    protocol and the command's callback."""
    return v.decode() if isinstance(v, bytes) else v


@check
def expiry(a, r):
    k = a.prefix + "ttl"
    assert r.set(k, b"v", ex=100) is True
    ttl = r.ttl(k)
    assert 1 <= ttl <= 100, ttl
    pttl = r.pttl(k)
    assert 0 < pttl <= 100_000, pttl
    assert r.pexpire(k, 300) == 1
    assert 0 < r.pttl(k) <= 300
    time.sleep(1.0)
    assert r.get(k) is None
    assert r.ttl(k) == -2
    assert r.pttl(k) == -2
    k2 = a.prefix + "setex"
    # SETEX itself (redis-py deprecates its `setex` helper for `set(ex=)`).
    assert r.execute_command("SETEX", k2, 100, b"w") is True
    assert 1 <= r.ttl(k2) <= 100
    assert r.get(k2) == b"w"
    assert r.persist(k2) == 1
    assert r.ttl(k2) == -1
    assert r.persist(k2) == 0  # no expiry left to remove
    assert r.get(k2) == b"w"
    assert r.expire(a.prefix + "ttl-missing", 100) == 0
    assert r.ttl(a.prefix + "ttl-missing") == -2


@check
def hashes_concurrent(a, r):
    h = a.prefix + "hash"
    writers, fields = 4, 50
    start = threading.Barrier(writers)
    errors = []

    def write(w):
        # One connection per writer, all released at once, so the writes
        # of different fields of the same hash interleave on the node.
        c = connect(a)
        try:
            start.wait(timeout=10)
            for f in range(fields):
                assert c.hset(h, f"w{w}f{f}", f"{w}:{f}") == 1
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            c.close()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a writer did not finish"
    assert not errors, errors
    want = {f"w{w}f{f}".encode(): f"{w}:{f}".encode()
            for w in range(writers) for f in range(fields)}
    got = r.hgetall(h)
    assert got == want, (len(got), sorted(set(want) - set(got))[:5])
    assert r.hlen(h) == writers * fields
    assert r.hdel(h, "w0f0") == 1
    assert r.hexists(h, "w0f0") == 0
    assert r.hexists(h, "w1f0") == 1
    assert r.hlen(h) == writers * fields - 1
    assert r.hmget(h, ["w1f1", "w0f0", "nofield"]) == [b"1:1", None, None]
    assert text(r.type(h)) == "hash"
    assert r.set(a.prefix + "plain", b"x") is True
    assert text(r.type(a.prefix + "plain")) == "string"
    assert text(r.type(a.prefix + "type-missing")) == "none"


@check
def scan_10000(a, r):
    prefix = a.prefix + "scan:"
    want = {f"{prefix}{i}".encode() for i in range(10_000)}
    p = r.pipeline(transaction=False)
    for k in want:
        p.set(k, b"s")
    assert all(x is True for x in p.execute())
    got = list(r.scan_iter(match=prefix + "*", count=1000))
    # Keys not written during a scan come back once each.
    assert len(got) == 10_000, len(got)
    assert set(got) == want
    # DBSIZE is an estimate: within 10% of what a full scan counts (no
    # other session runs meanwhile).
    size = r.dbsize()
    total = sum(1 for _ in r.scan_iter(count=1000))
    assert total >= 10_000, total
    assert abs(size - total) <= total // 10, (size, total)
    print(f"  DBSIZE {size}, a full SCAN {total}", flush=True)
    few = {f"{a.prefix}keys:{i}".encode() for i in range(10)}
    assert r.mset({k: b"k" for k in few}) is True
    got = r.keys(a.prefix + "keys:*")
    assert len(got) == 10 and set(got) == few, got


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tls-port", type=int, required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--protocol", type=int, choices=[2, 3])
    p.add_argument("--prefix", default="py:")
    a = p.parse_args()
    print(f"redis-py {redis.__version__} protocol={a.protocol or 'default'}", flush=True)
    r = connect(a)
    for fn in CHECKS:
        start = time.monotonic()
        fn(a, r)
        print(f"ok {fn.__name__}\n  ({time.monotonic() - start:.2f} s)", flush=True)
    print(f"session: {len(CHECKS)} checks", flush=True)


if __name__ == "__main__":
    sys.exit(main())
