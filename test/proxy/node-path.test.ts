// The proxy suites again, on the Node data path: the agent's default is the native one where the
// addon is built, and the Node proxy still carries https targets and machines without the addon.
// Each suite registers its tests when imported, so they run here under this process's setting.

process.env.INFERTEL_TEST_PROXY_DATA_PATH = 'node';
await import('./proxy.test.js');
await import('./edges.test.js');
await import('./limits.test.js');
await import('./fail-closed.test.js');
await import('./tracing.test.js');
await import('./canary.test.js');
