// Unit tests of policy.js: `node --test test_policy.js` (run by ./build before it builds).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BoundedCache, needsApplication, parseSettings, route, version } from './policy.js';

const config = parseSettings([
  ['node_applications', 'reporting=2, batch = 1'],
  ['read_only_applications', 'dashboard'],
  ['version_tag', 'blue'],
]);

test('reads of a listed application go to its node', () => {
  assert.deepEqual(route(config, 'read', 'reporting'), { tag: 'node', val: 2 });
  assert.deepEqual(route(config, 'read', 'batch'), { tag: 'node', val: 1 });
});

test('other reads go to any replica, everything else to the primary', () => {
  assert.deepEqual(route(config, 'read', 'web'), { tag: 'any-replica' });
  for (const kind of ['write', 'ddl', 'transaction-control', 'session-control', 'unknown']) {
    assert.deepEqual(route(config, kind, 'web'), { tag: 'primary' }, kind);
    assert.deepEqual(route(config, kind, 'reporting'), { tag: 'primary' }, kind);
  }
});

test('writes and DDL of a read-only application are refused with 25006, its reads are not', () => {
  for (const kind of ['write', 'ddl']) {
    const decision = route(config, kind, 'dashboard');
    assert.equal(decision.tag, 'reject');
    assert.equal(decision.val.sqlstate, '25006');
    assert.match(decision.val.message, /"dashboard" is read-only/);
  }
  assert.deepEqual(route(config, 'read', 'dashboard'), { tag: 'any-replica' });
  assert.deepEqual(route(config, 'transaction-control', 'dashboard'), { tag: 'primary' });
});

test('settings: version tag, defaults, and what needs the application name', () => {
  assert.equal(version(config), '0.1.0-js+blue');
  const empty = parseSettings([]);
  assert.equal(version(empty), '0.1.0-js');
  assert.equal(needsApplication(empty), false);
  assert.equal(needsApplication(config), true);
  assert.deepEqual(route(empty, 'read', ''), { tag: 'any-replica' });
});

test('unknown, repeated and malformed settings are refused with a message naming them', () => {
  assert.throws(() => parseSettings([['mode', 'x']]),
    { message: "unknown setting 'mode' (known settings: node_applications, read_only_applications, version_tag)" });
  assert.throws(() => parseSettings([['version_tag', 'a'], ['version_tag', 'b']]),
    { message: "setting 'version_tag' given twice" });
  for (const bad of ['reporting', 'reporting=x', '=2', 'a=1=2', 'a=-1']) {
    assert.throws(() => parseSettings([['node_applications', bad]]), /is not APPLICATION=NODE_INDEX/, bad);
  }
});

test('the session cache keeps at most its limit, dropping the oldest', () => {
  const cache = new BoundedCache(2);
  cache.set(1, 'a');
  cache.set(2, 'b');
  cache.set(1, 'a2');
  cache.set(3, 'c');
  assert.equal(cache.size, 2);
  assert.equal(cache.get(1), undefined);
  assert.equal(cache.get(2), 'b');
  assert.equal(cache.get(3), 'c');
});
