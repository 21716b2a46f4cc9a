// A Node.js session against a running Cassio node, one of the real-client
// matrix's (cassio-node/tests/real_clients.rs drives it; docs/testing.md).
// Runs with ioredis or node-redis (`redis` on npm), found through NODE_PATH
// (.ci/clients.sh installs both). Prints `ok CHECK` per check and exits 0;
// any failure exits 1 with the error. Each check is one entry of CHECKS, so
// later checks (expiry, hashes, SCAN) are one more entry each.
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

// One interface over both libraries: connect, send a raw command, pipeline.
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
