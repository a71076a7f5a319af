// The JavaScript router's decision as plain functions: no bindings, so `node --test` runs
// them on any machine (test_policy.js) and app.js maps the WIT records onto them.

export const VERSION = '0.1.0-js';

const KNOWN_SETTINGS = ['node_applications', 'read_only_applications', 'version_tag'];

// Parses the `[plugins.NAME.settings]` pairs. Throws an Error whose message the operator
// reads (the proxy refuses the plugin with it) on an unknown or repeated key or a bad value.
//
// - node_applications: "app=N, other=M": the reads of these applications go to node N (an
//   index into the cluster's nodes);
// - read_only_applications: "a, b": their writes and DDL are refused with 25006;
// - version_tag: free text, version() is "0.1.0-js+TAG".
export function parseSettings(pairs) {
  const seen = new Set();
  const config = { nodeOf: new Map(), readOnly: new Set(), versionTag: '' };
  for (const [key, value] of pairs) {
    if (!KNOWN_SETTINGS.includes(key)) {
      throw new Error(`unknown setting '${key}' (known settings: ${KNOWN_SETTINGS.join(', ')})`);
    }
    if (seen.has(key)) {
      throw new Error(`setting '${key}' given twice`);
    }
    seen.add(key);
    if (key === 'node_applications') {
      for (const entry of names(value)) {
        const [app, node, extra] = entry.split('=').map((s) => s.trim());
        if (!app || extra !== undefined || !/^[0-9]+$/.test(node ?? '')) {
          throw new Error(`node_applications: '${entry}' is not APPLICATION=NODE_INDEX`);
        }
        config.nodeOf.set(app, Number(node));
      }
    } else if (key === 'read_only_applications') {
      for (const app of names(value)) config.readOnly.add(app);
    } else {
      config.versionTag = value;
    }
  }
  return config;
}

function names(list) {
  return list.split(',').map((s) => s.trim()).filter((s) => s !== '');
}

export function version(config) {
  return config.versionTag ? `${VERSION}+${config.versionTag}` : VERSION;
}

// Whether the configuration needs the session's application name at all.
export function needsApplication(config) {
  return config.nodeOf.size > 0 || config.readOnly.size > 0;
}

// The decision, as the WIT variant `route-decision` in jco's shape ({ tag, val }).
// `kind` is the WIT enum `query-kind` ('read', 'write', 'ddl', ...); `application` the
// session's application name ('' when the configuration does not need it).
export function route(config, kind, application) {
  const writes = kind === 'write' || kind === 'ddl';
  if (writes && config.readOnly.has(application)) {
    return {
      tag: 'reject',
      val: { sqlstate: '25006', message: `application "${application}" is read-only: its writes are refused by the js-router policy` },
    };
  }
  if (kind === 'read') {
    const node = config.nodeOf.get(application);
    return node === undefined ? { tag: 'any-replica' } : { tag: 'node', val: node };
  }
  return { tag: 'primary' };
}

// A Map bounded to `limit` entries, the oldest dropped first: a per-session cache whose
// ended sessions age out.
export class BoundedCache {
  constructor(limit) {
    this.limit = limit;
    this.map = new Map();
  }
  get(key) {
    return this.map.get(key);
  }
  set(key, value) {
    if (this.map.size >= this.limit && !this.map.has(key)) {
      this.map.delete(this.map.keys().next().value);
    }
    this.map.set(key, value);
  }
  clear() {
    this.map.clear();
  }
  get size() {
    return this.map.size;
  }
}
