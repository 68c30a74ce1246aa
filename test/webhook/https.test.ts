// The built CLI's inject-webhook over a real HTTPS listener, with a real AdmissionReview body.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, writeFileSync } from 'node:fs';
import https from 'node:https';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { MAX_IN_FLIGHT, MAX_QUEUED, MAX_REVIEW_BYTES } from '../../agent/webhook/server.js';
import { CLI, eventually, tempDir } from '../helpers.js';

const hasOpenssl = spawnSync('openssl', ['version'], { stdio: 'ignore' }).status === 0;

function makeCert(dir: string, name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  const r = spawnSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      `/CN=${name}`,
      '-addext',
      'subjectAltName=DNS:localhost,IP:127.0.0.1',
      '-keyout',
      key,
      '-out',
      cert,
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(r.stderr);
  return { cert, key };
}

function post(port: number, body: string): Promise<{ status: number; json: any; peerCN: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port, path: '/mutate', method: 'POST', rejectUnauthorized: false, agent: false, headers: { 'Content-Type': 'application/json' } },
      (res) => {
        let b = '';
        res.on('data', (d) => (b += d));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            json: JSON.parse(b),
            peerCN: (res.socket as import('node:tls').TLSSocket).getPeerCertificate().subject.CN as string,
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Declares a body over the cap and sends only its first bytes: the answer must come anyway. */
function postOversized(port: number, declared: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        path: '/mutate',
        method: 'POST',
        rejectUnauthorized: false,
        agent: false,
        headers: { 'Content-Type': 'application/json', 'Content-Length': String(declared) },
      },
      (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
        req.destroy();
      },
    );
    req.on('error', () => {});
    req.write('{"request":');
    setTimeout(() => reject(new Error('no answer to an oversized review')), 5000).unref();
  });
}

/** Starts a review whose body never finishes: it holds a parsing slot (or a queue place) until destroyed. */
function holdOpen(port: number): { req: import('node:http').ClientRequest; status: Promise<number> } {
  let settle: (n: number) => void = () => {};
  const status = new Promise<number>((r) => (settle = r));
  const req = https.request(
    {
      host: '127.0.0.1',
      port,
      path: '/mutate',
      method: 'POST',
      rejectUnauthorized: false,
      agent: false,
      headers: { 'Content-Type': 'application/json', 'Content-Length': '1000' },
    },
    (res) => {
      res.resume();
      settle(res.statusCode ?? 0);
    },
  );
  req.on('error', () => settle(-1));
  req.write('{"request":');
  return { req, status };
}

describe('inject-webhook over HTTPS', { skip: !hasOpenssl && 'openssl not on PATH' }, () => {
  it('answers a real AdmissionReview with a JSONPatch, and reloads a rotated certificate', { timeout: 60_000 }, async () => {
    const dir = tempDir('infertel-wh-');
    const first = makeCert(dir, 'first');
    const second = makeCert(dir, 'second');
    const certFile = join(dir, 'tls.crt');
    const keyFile = join(dir, 'tls.key');
    copyFileSync(first.cert, certFile);
    copyFileSync(first.key, keyFile);
    const cfgFile = join(dir, 'webhook.yaml');
    writeFileSync(cfgFile, 'image: registry.example/infertel:test\nnativeSidecar: false\nconfigMap: infertel-agent\n');
    const child = spawn(
      process.execPath,
      [CLI, 'inject-webhook', '--listen', '127.0.0.1:0', '--tls-cert', certFile, '--tls-key', keyFile, '--config', cfgFile],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    try {
      // Port 0: the webhook logs the port the system chose.
      const started = await eventually(
        async () =>
          out
            .split('\n')
            .slice(0, -1)
            .find((l) => l.includes('"injection webhook listening"')),
        10_000,
        'webhook start',
      );
      const port = (JSON.parse(started) as { port: number }).port;
      const review = {
        apiVersion: 'admission.k8s.io/v1',
        kind: 'AdmissionReview',
        request: {
          uid: '705ab4f5-6393-11e8-b7cc-42010a800002',
          kind: { group: '', version: 'v1', kind: 'Pod' },
          resource: { group: '', version: 'v1', resource: 'pods' },
          namespace: 'inference',
          operation: 'CREATE',
          userInfo: { username: 'system:serviceaccount:kube-system:replicaset-controller' },
          object: {
            apiVersion: 'v1',
            kind: 'Pod',
            metadata: {
              generateName: 'vllm-7d9c-',
              labels: { app: 'vllm' },
              annotations: { 'infertel.io/inject': 'true', 'infertel.io/flavor': 'vllm', 'infertel.io/upstream': '8000' },
            },
            spec: { containers: [{ name: 'vllm', image: 'vllm/vllm-openai:v0.11.0', ports: [{ containerPort: 8000 }] }] },
          },
          oldObject: null,
          dryRun: false,
          options: { apiVersion: 'meta.k8s.io/v1', kind: 'CreateOptions' },
        },
      };
      const r = await post(port, JSON.stringify(review));
      assert.equal(r.status, 200);
      assert.equal(r.json.apiVersion, 'admission.k8s.io/v1');
      assert.equal(r.json.response.uid, review.request.uid);
      assert.equal(r.json.response.allowed, true);
      const patch = JSON.parse(Buffer.from(r.json.response.patch, 'base64').toString());
      const container = patch.find((o: { path: string }) => o.path === '/spec/containers/-').value;
      assert.equal(container.image, 'registry.example/infertel:test');
      assert.deepEqual(
        container.env.find((e: { name: string }) => e.name === 'INFERTEL_UPSTREAMS'),
        { name: 'INFERTEL_UPSTREAMS', value: 'vllm=http://127.0.0.1:8000/metrics' },
      );
      assert.equal(r.peerCN, 'first');

      const bad = await post(port, '{not json');
      assert.equal(bad.status, 200);
      assert.equal(bad.json.response.allowed, true);
      assert.ok(bad.json.response.warnings.length);

      // Shapes that once killed the process: each answered, and the process stays up.
      for (const containers of [{}, 5, 'abc', [null]]) {
        const hostile = structuredClone(review) as any;
        hostile.request.object.spec.containers = containers;
        const h = await post(port, JSON.stringify(hostile));
        assert.equal(h.status, 200);
        assert.equal(h.json.response.allowed, true);
      }
      assert.equal(child.exitCode, null, 'still running');

      // Over the body cap: refused before it is read whole.
      const huge = await postOversized(port, MAX_REVIEW_BYTES + 1);
      assert.equal(huge, 413);

      // Two reviews parse at once and 32 wait; the next one is refused with 429 at once. Clients
      // that go away free their places, and the webhook answers normally again.
      const held = Array.from({ length: MAX_IN_FLIGHT + MAX_QUEUED }, () => holdOpen(port));
      await new Promise((r) => setTimeout(r, 1500));
      const extra = holdOpen(port);
      assert.equal(await extra.status, 429);
      for (const h of [...held, extra]) h.req.destroy();
      await eventually(async () => (await post(port, JSON.stringify(review))).status === 200, 5000, 'slots freed');

      copyFileSync(second.key, keyFile);
      copyFileSync(second.cert, certFile);
      await eventually(async () => (await post(port, JSON.stringify(review))).peerCN === 'second', 10_000, 'the rotated certificate');
      assert.match(out, /serving certificate reloaded/);
    } finally {
      child.kill('SIGTERM');
    }
  });
});
