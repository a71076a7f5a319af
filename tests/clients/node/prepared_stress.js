#!/usr/bin/env node
// node-postgres stress client for Switchyard's integration tests.
//
// Opens --concurrency connections (pg.Client) and runs --transactions
// transactions on each, using *named* prepared statements
// ({name, text, values}): node-postgres parses a name once per connection and
// afterwards only binds it, so the proxy must keep names working across
// pooled server connections. Every result is checked; the final check
// compares row counts with what was committed.
//
// Prints errors to stderr and, last on stdout, `RESULT ok=<n> errors=<n>`.
// Exit status is 0 only if there were no errors.
'use strict';

const { Client } = require('pg');

const TABLE = 'node_stress';

function parseArgs(argv) {
  const a = { concurrency: 8, transactions: 100 };
  for (let i = 2; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    a[key] = argv[i + 1];
  }
  for (const k of ['host', 'port', 'user', 'password', 'dbname']) {
    if (a[k] === undefined) throw new Error(`missing --${k}`);
  }
  a.port = Number(a.port);
  a.concurrency = Number(a.concurrency);
  a.transactions = Number(a.transactions);
  return a;
}

function client(a) {
  return new Client({
    host: a.host, port: a.port, user: a.user, password: a.password, database: a.dbname,
    connectionTimeoutMillis: 10000, application_name: 'node-stress',
  });
}

async function worker(a, id, results) {
  const c = client(a);
  try {
    await c.connect();
  } catch (e) {
    results.errors.push(`client ${id}: connect: ${e.message}`);
    return;
  }
  for (let i = 0; i < a.transactions; i++) {
    try {
      await c.query('BEGIN');
      for (let k = 0; k < 3; k++) {
        const r = await c.query({ name: 'q_sum', text: 'SELECT $1::int + $2::int AS s, $3::text AS who', values: [i, k, `c${id}`] });
        if (r.rows[0].s !== i + k || r.rows[0].who !== `c${id}`) {
          throw new Error(`q_sum returned ${JSON.stringify(r.rows)}, expected s=${i + k} who=c${id}`);
        }
      }
      await c.query({ name: 'q_insert', text: `INSERT INTO ${TABLE} (client, n) VALUES ($1, $2)`, values: [id, i] });
      const r = await c.query({ name: 'q_count', text: `SELECT count(*)::int AS n FROM ${TABLE} WHERE client = $1`, values: [id] });
      if (r.rows[0].n !== i + 1) {
        throw new Error(`client ${id} sees ${r.rows[0].n} own rows in transaction ${i}, expected ${i + 1}`);
      }
      await c.query('COMMIT');
      results.ok++;
    } catch (e) {
      results.errors.push(`client ${id} transaction ${i}: ${e.code || ''} ${e.message}`);
      try { await c.query('ROLLBACK'); } catch (_) { break; }
    }
  }
  await c.end().catch(() => {});
}

async function main() {
  const a = parseArgs(process.argv);
  const setup = client(a);
  await setup.connect();
  await setup.query(`DROP TABLE IF EXISTS ${TABLE}`);
  await setup.query(`CREATE TABLE ${TABLE} (client int NOT NULL, n int NOT NULL)`);
  await setup.end();

  const results = { ok: 0, errors: [] };
  const workers = [];
  for (let id = 0; id < a.concurrency; id++) workers.push(worker(a, id, results));
  await Promise.all(workers);

  const check = client(a);
  await check.connect();
  const r = await check.query(`SELECT count(*)::int AS n FROM ${TABLE}`);
  await check.end();
  if (r.rows[0].n !== results.ok) {
    results.errors.push(`table has ${r.rows[0].n} rows but ${results.ok} transactions committed`);
  }

  for (const e of results.errors.slice(0, 20)) console.error(e);
  console.log(`RESULT ok=${results.ok} errors=${results.errors.length}`);
  process.exitCode = results.errors.length === 0 ? 0 : 1;
}

main().catch((e) => {
  console.error(`fatal: ${e.stack || e}`);
  console.log('RESULT ok=0 errors=1');
  process.exitCode = 1;
});
