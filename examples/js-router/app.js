// Switchyard's router policy in JavaScript: world `router-plugin` of ../../wit, built into a
// WebAssembly component by componentize-js (see ./build). The decision is in policy.js.
import { log, counterAdd, currentSession } from 'switchyard:policy/host@0.1.0';
import { BoundedCache, needsApplication, parseSettings, route as decide, version as versionOf } from './policy.js';

let config = parseSettings([]);
// Session id -> application name: one `host.current-session` call per session and instance.
const applications = new BoundedCache(4096);

export const lifecycle = {
  init(settings) {
    try {
      config = parseSettings(settings);
    } catch (error) {
      // jco's convention: a thrown value with `payload` is the `err` of a result.
      throw { payload: error.message };
    }
    applications.clear();
    const nodes = [...config.nodeOf].map(([app, node]) => `${app} -> node ${node}`).join(', ') || 'none';
    const readOnly = [...config.readOnly].join(', ') || 'none';
    log('info', `js-router ${versionOf(config)}: reads by application: ${nodes}; read-only: ${readOnly}`);
  },
  version() {
    return versionOf(config);
  },
};

function applicationOf(session) {
  if (!needsApplication(config)) return '';
  let name = applications.get(session.id);
  if (name === undefined) {
    name = currentSession()?.applicationName ?? '';
    applications.set(session.id, name);
  }
  return name;
}

export const router = {
  route(session, query, _nodes) {
    const decision = decide(config, query.kind, applicationOf(session));
    counterAdd(`route.${decision.tag}`, 1n);
    return decision;
  },
};
