import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { apiRoutes, type RouteName } from '../../src/protocol/index.js';
import { buildOpenApiDocument, STEWARD_VERSION } from '../../src/server/index.js';
import { startHarness, type Harness } from './harness.js';

/** The parts of the OpenAPI document this test reads. */
const Operation = z.object({
  operationId: z.string(),
  parameters: z.array(z.object({ name: z.string() }).passthrough()).optional(),
  requestBody: z.unknown().optional(),
  responses: z.record(z.string(), z.unknown()),
});
const OpenApiDocument = z.object({
  openapi: z.string(),
  paths: z.record(z.string(), z.record(z.string(), Operation)),
});
const SubmitBody = z.object({
  content: z.object({
    'application/json': z.object({
      schema: z.object({ properties: z.object({ workflow: z.object({ pattern: z.string() }) }) }),
    }),
  }),
});

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
    const response = await h.call('openapi');
    expect(response.status).toBe(200);
    expect(response.json).toEqual(buildOpenApiDocument(STEWARD_VERSION));
    const document = OpenApiDocument.parse(response.json);
    expect(document.openapi).toBe('3.1.0');
    const operations = Object.values(document.paths).flatMap((ops) =>
      Object.values(ops).map((op) => op.operationId),
    );
    expect(operations.sort()).toEqual(Object.keys(apiRoutes).sort());
    const submit = document.paths['/api/jobs']?.post;
    expect(
      SubmitBody.parse(submit?.requestBody).content['application/json'].schema.properties.workflow.pattern,
    ).toBeDefined();
    expect(submit?.responses['201']).toBeDefined();
    expect(document.paths['/api/jobs/{id}']?.get?.parameters).toEqual([
      expect.objectContaining({ name: 'id', in: 'path', required: true }),
    ]);
    expect(document.paths['/api/jobs']?.get?.parameters?.map((p) => p.name)).toEqual([
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
