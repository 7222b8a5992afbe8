/**
 * The portal served at `/` by a real server: the built files, the index.html fallback for client routes,
 * the "not built" text, and the security headers on every kind of response.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CONTENT_SECURITY_POLICY } from '../../src/server/portal.js';
import { errorOf, startHarness, type Harness } from './harness.js';

const INDEX =
  '<!doctype html><html><head><script type="module" src="/assets/app-3f2a.js"></script></head></html>';

function expectSecurityHeaders(headers: Record<string, unknown>): void {
  expect(headers['content-security-policy']).toBe(CONTENT_SECURITY_POLICY);
  expect(headers['x-content-type-options']).toBe('nosniff');
  expect(headers['referrer-policy']).toBe('no-referrer');
  expect(headers['x-frame-options']).toBe('DENY');
}

describe('the portal served at /', () => {
  let h: Harness;
  let portalDir: string;
  beforeAll(() => {
    portalDir = mkdtempSync(path.join(os.tmpdir(), 'steward-papi-portal-'));
    mkdirSync(path.join(portalDir, 'assets'));
    writeFileSync(path.join(portalDir, 'index.html'), INDEX);
    writeFileSync(path.join(portalDir, 'assets', 'app-3f2a.js'), 'console.log("portal");\n');
    writeFileSync(path.join(portalDir, '.secret'), 'not for anyone\n');
  });
  afterAll(() => {
    rmSync(portalDir, { recursive: true, force: true });
  });
  afterEach(async () => {
    await h.dispose();
  });

  it('serves the built portal, its hashed assets with a long cache, and index.html for client routes', async () => {
    h = await startHarness({ title: 'papi portal built', portalDir });
    const root = await h.raw({ method: 'GET', url: '/' });
    expect(root.status).toBe(200);
    expect(root.text).toBe(INDEX);
    expect(root.headers['content-type']).toContain('text/html');
    expect(root.headers['cache-control']).toBe('no-cache');
    expectSecurityHeaders(root.headers);

    const asset = await h.raw({ method: 'GET', url: '/assets/app-3f2a.js' });
    expect(asset.status).toBe(200);
    expect(asset.headers['content-type']).toContain('javascript');
    expect(asset.headers['cache-control']).toContain('immutable');
    expectSecurityHeaders(asset.headers);

    for (const route of ['/jobs', '/jobs/20260101-abc?tab=logs', '/admin/audit']) {
      const page = await h.raw({ method: 'GET', url: route });
      expect(page.status, route).toBe(200);
      expect(page.text).toBe(INDEX);
      expectSecurityHeaders(page.headers);
    }
    // A missing hashed file is not the index page; dot files are never served; API paths stay JSON.
    expect((await h.raw({ method: 'GET', url: '/assets/app-old.js' })).status).toBe(404);
    expect((await h.raw({ method: 'GET', url: '/.secret' })).text).not.toContain('not for anyone');
    const traversal = await h.raw({ method: 'GET', url: '/assets/..%2f..%2f..%2fetc%2fpasswd' });
    expect(traversal.text).not.toContain('root:');
    const api404 = await h.raw({ method: 'GET', url: '/api/nothing-here' });
    expect(api404.status).toBe(404);
    expect(errorOf(api404).code).toBe('STEWARD_NOT_FOUND');
    expectSecurityHeaders(api404.headers);
  });

  it('says in plain text that the portal is not built, and keeps the API working', async () => {
    h = await startHarness({ title: 'papi portal missing', portalDir: path.join(portalDir, 'absent') });
    const root = await h.raw({ method: 'GET', url: '/' });
    expect(root.headers['content-type']).toContain('text/plain');
    expect(root.text).toContain('portal is not built');
    expectSecurityHeaders(root.headers);
    const health = await h.raw({ method: 'GET', url: '/api/health' });
    expect(health.status).toBe(200);
    expectSecurityHeaders(health.headers);
  });

  it('sets the security headers on API answers and errors alike', async () => {
    h = await startHarness({ title: 'papi portal headers', portalDir });
    const unauthenticated = await h.raw({ method: 'GET', url: '/api/jobs' });
    expect(unauthenticated.status).toBe(401);
    expectSecurityHeaders(unauthenticated.headers);
    const badJson = await h.raw({
      method: 'POST',
      url: '/api/auth/login',
      payload: '{not json',
      headers: { 'content-type': 'application/json' },
    });
    expect(badJson.status).toBe(400);
    expectSecurityHeaders(badJson.headers);
    const token = await h.adminToken();
    const listed = await h.raw({ method: 'GET', url: '/api/users', token });
    expect(listed.status).toBe(200);
    expectSecurityHeaders(listed.headers);
  });
});
