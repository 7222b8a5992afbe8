/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-unsafe-member-access -- HTTP response bodies are checked by assertions, not by static types. */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiRoutes, type RouteName } from '../../src/protocol/index.js';
import { buildOpenApiDocument, STEWARD_VERSION } from '../../src/server/index.js';
import { startHarness, type Harness } from './harness.js';

const committed = path.resolve(import.meta.dirname, '../../docs/openapi.json');

describe('route table and OpenAPI document', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ title: 'openapi' });
  });
  afterAll(async () => {
    await h.dispose();
  });

  it('registers a handler for every route in apiRoutes', () => {
    for (const [name, route] of Object.entries(apiRoutes) as [RouteName, (typeof apiRoutes)[RouteName]][]) {
      expect(
        h.server.app.hasRoute({ method: route.method, url: route.path }),
        `${name}: ${route.method} ${route.path}`,
      ).toBe(true);
    }
  });

  it('serves the OpenAPI 3.1 document generated from the route table', async () => {
    const response = await h.request({ method: 'GET', url: '/api/openapi.json' });
    expect(response.status).toBe(200);
    expect(response.json.openapi).toBe('3.1.0');
    expect(response.json).toEqual(buildOpenApiDocument(STEWARD_VERSION));
    const operations = Object.values(
      response.json.paths as Record<string, Record<string, { operationId: string }>>,
    ).flatMap((ops) => Object.values(ops).map((op) => op.operationId));
    expect(operations.sort()).toEqual(Object.keys(apiRoutes).sort());
    const submit = response.json.paths['/api/jobs'].post;
    expect(submit.requestBody.content['application/json'].schema.properties.workflow.pattern).toBeDefined();
    expect(submit.responses['201']).toBeDefined();
    expect(response.json.paths['/api/jobs/{id}'].get.parameters).toEqual([
      expect.objectContaining({ name: 'id', in: 'path', required: true }),
    ]);
    expect(response.json.paths['/api/jobs'].get.parameters.map((p: { name: string }) => p.name)).toEqual([
      'state',
      'user',
      'workflow',
      'space',
      'since',
      'until',
      'limit',
      'before',
    ]);
  });

  it('keeps docs/openapi.json in step with the code (STEWARD_UPDATE_OPENAPI=1 rewrites it)', () => {
    const current = `${JSON.stringify(buildOpenApiDocument(STEWARD_VERSION), null, 2)}\n`;
    if (process.env.STEWARD_UPDATE_OPENAPI === '1') writeFileSync(committed, current);
    expect(
      existsSync(committed),
      'docs/openapi.json is missing: run `npm run build && npm run openapi`',
    ).toBe(true);
    expect(
      readFileSync(committed, 'utf8'),
      'docs/openapi.json is stale: run `npm run build && npm run openapi`',
    ).toBe(current);
  });
});
