// A Node.js session against a running Cassio node, one of the real-client
// matrix's (cassio-node/tests/real_clients.rs drives it; docs/testing.md).
// Runs with ioredis or node-redis (`redis` on npm), found through NODE_PATH
// (.ci/clients.sh installs both). Prints `ok CHECK` per check and exits 0;
// any failure exits 1 with the error. Each check is one entry of CHECKS.
// The sessions run one after another against the same node, each under its
// own key prefix (--prefix).
//
// Usage: node session.cjs --client ioredis|redis --port P --tls-port T
//        --ca CA.pem --user U --password PW [--prefix KEYPREFIX]
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');

function args() {
  const a = { host: '127.0.0.1' };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    a[argv[i].replace(/^--/, '').replace(/-(.)/g, (_, c) => c.toUpperCase())] = argv[i + 1];
  }
  for (const k of ['client', 'port', 'tlsPort', 'ca', 'user', 'password']) {
    if (!a[k]) throw new Error(`missing --${k}`);
  }
  a.prefix = a.prefix || `${a.client}:`;
  return a;
}

// One interface over both libraries: connect, send a raw command, pipeline,
// and every key of a SCAN through the library's own iterator (duplicates
// kept, so a check can count them).
const drivers = {
  ioredis: {
    lib: () => require('ioredis'),
    version: () => require('ioredis/package.json').version,
    async connect(a, over = {}) {
      const Redis = this.lib();
      const o = {
        host: a.host, port: Number(a.port), username: a.user, password: a.password,
        lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false,
        retryStrategy: () => null, connectTimeout: 10000, ...over,
      };
      const c = new Redis(o);
      // ioredis reports a refused AUTH as an 'error' event and then closes
      // (its ready check meets NOAUTH), as it does with Redis: the event's
      // message is the answer to check.
      let last = null;
      c.on('error', (e) => { last = e; });
      try {
        await c.connect();
      } catch (e) {
        throw new Error(`${e.message}${last ? ` (${last.message})` : ''}`);
      }
      return {
        cmd: (...xs) => c.callBuffer(xs[0], ...xs.slice(1)),
        pipeline: (cmds) => c.pipeline(cmds.map((x) => [x[0] + 'Buffer', ...x.slice(1)]))
          .exec().then((rs) => rs.map(([e, v]) => { if (e) throw e; return v; })),
        async scan(match, count) {
          const keys = [];
          const opts = match === undefined ? { count } : { match, count };
          for await (const page of c.scanBufferStream(opts)) keys.push(...page.map(str));
          return keys;
        },
        close: () => c.quit(),
      };
    },
  },
  redis: {
    lib: () => require('redis'),
    version: () => require('redis/package.json').version,
    async connect(a, over = {}) {
      const { createClient, RESP_TYPES } = this.lib();
      const socket = { host: a.host, port: Number(a.port), connectTimeout: 10000, reconnectStrategy: false };
      if (over.tls) Object.assign(socket, { tls: true, ca: over.tls.ca, servername: 'localhost' });
      if (over.port) socket.port = Number(over.port);
      const c = createClient({
        socket,
        username: 'username' in over ? over.username : a.user,
        password: 'password' in over ? over.password : a.password,
        disableOfflineQueue: true,
      }).withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
      c.on('error', () => {});
      await c.connect();
      return {
        cmd: (...xs) => c.sendCommand(xs.map((x) => (Buffer.isBuffer(x) ? x : String(x)))),
        pipeline: (cmds) => {
          const m = c.multi();
          for (const x of cmds) m.addCommand(x.map(String));
          return m.execAsPipeline();
        },
        async scan(match, count) {
          const keys = [];
          const opts = match === undefined ? { COUNT: count } : { MATCH: match, COUNT: count };
          for await (const page of c.scanIterator(opts)) keys.push(...page.map(str));
          return keys;
        },
        close: () => c.close ? c.close() : c.quit(),
      };
    },
  },
};

const str = (b) => (b == null ? b : Buffer.from(b).toString());

const CHECKS = [
  ['connect_handshake', async (a, r) => {
    assert.equal(str(await r.cmd('PING')), 'PONG');
    assert.equal(str(await r.cmd('ECHO', 'hi')), 'hi');
    assert.equal(str(await r.cmd('CLIENT', 'SETNAME', 'cassio-session')), 'OK');
    assert.equal(str(await r.cmd('CLIENT', 'GETNAME')), 'cassio-session');
  }],
  ['get_set_del', async (a, r) => {
    const k = a.prefix + 'k';
    assert.equal(str(await r.cmd('SET', k, 'v1')), 'OK');
    assert.equal(str(await r.cmd('GET', k)), 'v1');
    assert.equal(await r.cmd('EXISTS', k), 1);
    assert.equal(await r.cmd('DEL', k), 1);
    assert.equal(await r.cmd('GET', k), null);
    assert.equal(await r.cmd('DEL', k), 0);
  }],
  ['binary_values', async (a, r) => {
    const v = Buffer.from([...Array(256).keys()]);
    assert.equal(str(await r.cmd('SET', a.prefix + 'bin', v)), 'OK');
    assert.deepEqual(Buffer.from(await r.cmd('GET', a.prefix + 'bin')), v);
    const bk = Buffer.concat([Buffer.from(a.prefix), v]);
    assert.equal(str(await r.cmd('SET', bk, 'x')), 'OK');
    assert.equal(str(await r.cmd('GET', bk)), 'x');
  }],
  ['one_mib_value', async (a, r) => {
    const v = Buffer.alloc(1 << 20);
    for (let i = 0; i < v.length; i++) v[i] = (i * 7) % 256;
    assert.equal(str(await r.cmd('SET', a.prefix + 'big', v)), 'OK');
    assert.ok(Buffer.from(await r.cmd('GET', a.prefix + 'big')).equals(v));
  }],
  ['pipeline_1000', async (a, r) => {
    const cmds = [];
    for (let i = 0; i < 500; i++) cmds.push(['set', `${a.prefix}p${i}`, String(i)]);
    for (let i = 0; i < 500; i++) cmds.push(['get', `${a.prefix}p${i}`]);
    const out = await r.pipeline(cmds);
    assert.equal(out.length, 1000);
    for (let i = 0; i < 500; i++) assert.equal(str(out[i]), 'OK');
    for (let i = 0; i < 500; i++) assert.equal(str(out[500 + i]), String(i));
  }],
  ['mget_mset', async (a, r) => {
    const flat = [];
    for (let i = 0; i < 50; i++) flat.push(`${a.prefix}m${i}`, `v${i}`);
    assert.equal(str(await r.cmd('MSET', ...flat)), 'OK');
    const keys = flat.filter((_, i) => i % 2 === 0).concat([a.prefix + 'missing']);
    const got = (await r.cmd('MGET', ...keys)).map(str);
    assert.deepEqual(got, flat.filter((_, i) => i % 2 === 1).concat([null]));
  }],
  ['unknown_command', async (a, r) => {
    await assert.rejects(r.cmd('NOSUCHCMD', 'x'), (e) => /nosuchcmd/i.test(String(e.message)));
    assert.equal(str(await r.cmd('PING')), 'PONG');
  }],
  ['auth_ok_and_failure', async (a, r, d) => {
    const ok = await d.connect(a);
    assert.equal(str(await ok.cmd('PING')), 'PONG');
    await ok.close();
    await assert.rejects(
      (async () => { const c = await d.connect(a, { password: a.password + '-wrong' }); await c.cmd('PING'); })(),
      (e) => /WRONGPASS|invalid/i.test(String(e.message)),
    );
    await assert.rejects(
      (async () => { const c = await d.connect(a, { username: undefined, password: undefined }); await c.cmd('GET', a.prefix + 'k'); })(),
      (e) => /NOAUTH/.test(String(e.message)),
    );
  }],
  ['tls', async (a, r, d) => {
    const ca = fs.readFileSync(a.ca);
    const t = await d.connect(a, { port: a.tlsPort, tls: { ca, servername: 'localhost' } });
    const v = Buffer.from([...Array(256).keys()]);
    assert.equal(str(await t.cmd('SET', a.prefix + 'tls', v)), 'OK');
    assert.deepEqual(Buffer.from(await t.cmd('GET', a.prefix + 'tls')), v);
    assert.equal(await t.cmd('DEL', a.prefix + 'tls'), 1);
    await t.close();
  }],
  ['expiry', async (a, r) => {
    const k = a.prefix + 'ttl';
    assert.equal(str(await r.cmd('SET', k, 'v', 'EX', '100')), 'OK');
    const ttl = await r.cmd('TTL', k);
    assert.ok(ttl >= 1 && ttl <= 100, `TTL ${ttl}`);
    const pttl = await r.cmd('PTTL', k);
    assert.ok(pttl > 0 && pttl <= 100000, `PTTL ${pttl}`);
    assert.equal(await r.cmd('PEXPIRE', k, '300'), 1);
    const left = await r.cmd('PTTL', k);
    assert.ok(left > 0 && left <= 300, `PTTL after PEXPIRE ${left}`);
    await new Promise((res) => setTimeout(res, 1000));
    assert.equal(await r.cmd('GET', k), null);
    assert.equal(await r.cmd('TTL', k), -2);
    assert.equal(await r.cmd('PTTL', k), -2);
    const k2 = a.prefix + 'setex';
    assert.equal(str(await r.cmd('SETEX', k2, '100', 'w')), 'OK');
    const t2 = await r.cmd('TTL', k2);
    assert.ok(t2 >= 1 && t2 <= 100, `TTL after SETEX ${t2}`);
    assert.equal(str(await r.cmd('GET', k2)), 'w');
    assert.equal(await r.cmd('PERSIST', k2), 1);
    assert.equal(await r.cmd('TTL', k2), -1);
    assert.equal(await r.cmd('PERSIST', k2), 0);
    assert.equal(str(await r.cmd('GET', k2)), 'w');
    assert.equal(await r.cmd('EXPIRE', a.prefix + 'ttl-missing', '100'), 0);
    assert.equal(await r.cmd('TTL', a.prefix + 'ttl-missing'), -2);
  }],
  ['hashes_concurrent', async (a, r, d) => {
    const h = a.prefix + 'hash';
    const writers = 4;
    const fields = 50;
    // One connection per writer, all writing at once: their HSETs of
    // different fields of the same hash interleave on the node.
    const conns = await Promise.all([...Array(writers).keys()].map(() => d.connect(a)));
    const answers = await Promise.all(conns.map(async (c, w) => {
      const got = [];
      for (let f = 0; f < fields; f++) got.push(await c.cmd('HSET', h, `w${w}f${f}`, `${w}:${f}`));
      return got;
    }));
    await Promise.all(conns.map((c) => c.close()));
    for (const got of answers) assert.deepEqual(got, Array(fields).fill(1));
    const want = {};
    for (let w = 0; w < writers; w++) for (let f = 0; f < fields; f++) want[`w${w}f${f}`] = `${w}:${f}`;
    // HGETALL: a flat array (RESP2) or a map (RESP3), by library.
    const all = await r.cmd('HGETALL', h);
    const got = {};
    if (all instanceof Map) for (const [f, v] of all) got[str(f)] = str(v);
    else if (Array.isArray(all)) for (let i = 0; i < all.length; i += 2) got[str(all[i])] = str(all[i + 1]);
    else for (const [f, v] of Object.entries(all)) got[f] = str(v);
    assert.deepEqual(got, want);
    assert.equal(await r.cmd('HLEN', h), writers * fields);
    assert.equal(await r.cmd('HDEL', h, 'w0f0'), 1);
    assert.equal(await r.cmd('HEXISTS', h, 'w0f0'), 0);
    assert.equal(await r.cmd('HEXISTS', h, 'w1f0'), 1);
    assert.equal(await r.cmd('HLEN', h), writers * fields - 1);
    assert.deepEqual((await r.cmd('HMGET', h, 'w1f1', 'w0f0', 'nofield')).map(str), ['1:1', null, null]);
    assert.equal(str(await r.cmd('TYPE', h)), 'hash');
    assert.equal(str(await r.cmd('SET', a.prefix + 'plain', 'x')), 'OK');
    assert.equal(str(await r.cmd('TYPE', a.prefix + 'plain')), 'string');
    assert.equal(str(await r.cmd('TYPE', a.prefix + 'type-missing')), 'none');
  }],
  ['scan_10000', async (a, r) => {
    const prefix = a.prefix + 'scan:';
    const want = [...Array(10000).keys()].map((i) => `${prefix}${i}`);
    const out = await r.pipeline(want.map((k) => ['set', k, 's']));
    assert.ok(out.every((x) => str(x) === 'OK'));
    const got = await r.scan(`${prefix}*`, 1000);
    // Keys not written during a scan come back once each.
    assert.equal(got.length, 10000);
    assert.deepEqual(new Set(got), new Set(want));
    // DBSIZE is an estimate: within 10% of what a full scan counts (no
    // other session runs meanwhile).
    const size = await r.cmd('DBSIZE');
    const total = (await r.scan(undefined, 1000)).length;
    assert.ok(total >= 10000, `full scan ${total}`);
    assert.ok(Math.abs(size - total) <= Math.floor(total / 10), `DBSIZE ${size}, scan ${total}`);
    const few = [...Array(10).keys()].map((i) => `${a.prefix}keys:${i}`);
    assert.equal(str(await r.cmd('MSET', ...few.flatMap((k) => [k, 'k']))), 'OK');
    const keys = (await r.cmd('KEYS', `${a.prefix}keys:*`)).map(str);
    assert.equal(keys.length, 10);
    assert.deepEqual(new Set(keys), new Set(few));
  }],
];

async function main() {
  const a = args();
  const d = drivers[a.client];
  if (!d) throw new Error(`unknown --client ${a.client}`);
  console.log(`${a.client} ${d.version()} node ${process.version}`);
  const r = await d.connect(a);
  for (const [name, fn] of CHECKS) {
    await fn(a, r, d);
    console.log(`ok ${name}`);
  }
  await r.close();
  console.log(`session: ${CHECKS.length} checks`);
}

main().then(() => process.exit(0), (e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
