// Which data path carries the proxy's bytes (proxy.dataPath): the agent's default is the native
// loop where the addon is built; https targets and targets with a base path stay on Node's stack,
// and asking for native where it cannot run is a configuration error at start.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadAddon } from '../../agent/gpu/addon.js';
import { nativeUnfit } from '../../agent/proxy/native-proxy.js';
import { startHarness } from './harness.js';

const built = loadAddon().ok;

describe('proxy.dataPath', () => {
  it('nativeUnfit: plain http with no base path is fit; https and a base path are not', () => {
    const cases: Array<[string, RegExp | undefined]> = [
      ['http://127.0.0.1:8000', undefined],
      ['http://127.0.0.1:8000/', undefined],
      ['http://[::1]:8000', undefined],
      ['http://engine.local', undefined],
      ['https://127.0.0.1:8443', /not plain http/],
      ['http://127.0.0.1:8000/engine', /base path/],
    ];
    for (const [target, why] of cases) {
      const got = nativeUnfit(target);
      if (why) assert.match(got ?? '', why, target);
      else assert.equal(got, undefined, target);
    }
  });

  it('auto runs the native data path where the addon is built, and says which in its log', async () => {
    const h = await startHarness({ proxy: { dataPath: 'auto' } });
    try {
      assert.equal(h.agent.proxy?.dataPath, built ? 'native' : 'node');
      assert.match(h.agentLogs(), new RegExp(`"data_path":"${built ? 'native' : 'node'}"`));
    } finally {
      await h.close();
    }
  });

  it('node runs the Node proxy even where the addon is built', async () => {
    const h = await startHarness({ proxy: { dataPath: 'node' } });
    try {
      assert.equal(h.agent.proxy?.dataPath, 'node');
    } finally {
      await h.close();
    }
  });

  it('auto keeps an https target on the Node data path; native refuses it at start, naming the key', async () => {
    const h = await startHarness({ proxy: { dataPath: 'auto', target: 'https://127.0.0.1:9' } });
    try {
      assert.equal(h.agent.proxy?.dataPath, 'node');
    } finally {
      await h.close();
    }
    await assert.rejects(
      startHarness({ proxy: { dataPath: 'native', target: 'https://127.0.0.1:9' } }),
      /proxy\.dataPath: native is not available here \(the target is not plain http/,
    );
  });
});
