/**
 * The OpenAPI 3.1 document, generated from `apiRoutes` and their zod schemas (never hand-written), so the
 * document, the validation and the handlers cannot drift apart.
 */
import { z } from 'zod';
import { apiRoutes, ErrorResponse, errorCatalogue, type ApiRoute } from '../protocol/index.js';

type JsonSchema = Record<string, unknown>;

function schemaOf(type: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const schema = z.toJSONSchema(type, { io, target: 'draft-2020-12', unrepresentable: 'any' }) as JsonSchema;
  delete schema.$schema;
  return schema;
}

function parametersOf(type: z.ZodType | undefined, where: 'path' | 'query'): unknown[] {
  if (!type) return [];
  const schema = schemaOf(type, 'input');
  const properties = (schema.properties ?? {}) as Record<string, JsonSchema>;
  const required = new Set((schema.required ?? []) as string[]);
  return Object.entries(properties).map(([name, property]) => {
    const { description, ...rest } = property;
    return {
      name,
      in: where,
      required: where === 'path' ? true : required.has(name) && !('default' in rest),
      ...(typeof description === 'string' ? { description } : {}),
      schema: rest,
    };
  });
}

function errorStatuses(route: ApiRoute): number[] {
  const statuses = new Set<number>([400, 500]);
  if (route.auth !== 'none') statuses.add(401);
  if (route.auth === 'admin' || route.auth === 'job') statuses.add(403);
  if (route.params) statuses.add(404);
  return [...statuses].sort();
}

export function buildOpenApiDocument(version: string): Record<string, unknown> {
  const paths: Record<string, Record<string, unknown>> = {};
  for (const [operationId, route] of Object.entries(apiRoutes) as [string, ApiRoute][]) {
    const openApiPath = route.path.replace(/:([A-Za-z_]+)/g, '{$1}');
    const status = String(route.status ?? 200);
    const success: Record<string, unknown> = { description: route.summary };
    if (route.response)
      success.content = { 'application/json': { schema: schemaOf(route.response, 'output') } };
    else if (route.responseMediaType && status !== '204')
      success.content = { [route.responseMediaType]: { schema: {} } };
    const responses: Record<string, unknown> = { [status]: success };
    for (const code of errorStatuses(route)) {
      const codes = Object.entries(errorCatalogue)
        .filter(([, entry]) => entry.status === code)
        .map(([name]) => name);
      responses[String(code)] = {
        description: codes.length > 0 ? `Error (${codes.join(', ')})` : 'Error',
        content: { 'application/json': { schema: { $ref: '#/components/schemas/ErrorResponse' } } },
      };
    }
    const operation: Record<string, unknown> = {
      operationId,
      summary: route.summary,
      tags: [route.tag],
      parameters: [...parametersOf(route.params, 'path'), ...parametersOf(route.query, 'query')],
      responses,
      security:
        route.auth === 'none'
          ? []
          : route.auth === 'job'
            ? [{ jobToken: [] }]
            : [{ bearer: [] }, { session: [] }],
    };
    if (route.body) {
      operation.requestBody = {
        required: true,
        content: { 'application/json': { schema: schemaOf(route.body, 'input') } },
      };
    } else if (route.method === 'PUT') {
      operation.requestBody = {
        required: true,
        content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } },
      };
    }
    (paths[openApiPath] ??= {})[route.method.toLowerCase()] = operation;
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'Steward API',
      version,
      description:
        'REST API of the Steward workflow server. Errors are always `{error: {code, message, details?}}`; codes are listed in docs/errors.md.',
    },
    servers: [{ url: '/' }],
    paths,
    components: {
      schemas: { ErrorResponse: schemaOf(ErrorResponse, 'output') },
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          description: 'A login token (POST /api/auth/login) or a named API token (stw_…).',
        },
        session: {
          type: 'apiKey',
          in: 'cookie',
          name: 'steward_session',
          description:
            'A portal session (POST /api/auth/session). POST, PUT, PATCH and DELETE with it also need the header X-CSRF-Token (the `csrfToken` of the session) and no foreign Origin.',
        },
        jobToken: {
          type: 'http',
          scheme: 'bearer',
          description: 'The job-scoped token from the job offer (stj_…); executors only.',
        },
      },
    },
  };
}
