/**
 * A thin REST client for tests: logs in as a server user and talks to a real `steward up` over HTTP, with the
 * request and response shapes of src/protocol/api.ts.
 */
import type { JobDetail } from '../../src/protocol/index.js';
import { until } from './wait.js';

const finalStates = new Set(['succeeded', 'failed', 'canceled', 'expired', 'lost']);

export class ApiUser {
  private constructor(
    readonly url: string,
    readonly name: string,
    private readonly token: string,
  ) {}

  static async login(url: string, name: string, password: string): Promise<ApiUser> {
    const response = await fetch(`${url}/api/auth/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ user: name, password }),
    });
    if (!response.ok) throw new Error(`login as ${name}: ${response.status} ${await response.text()}`);
    const { token } = (await response.json()) as { token: string };
    return new ApiUser(url, name, token);
  }

  async request(method: string, route: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    const response = await fetch(`${this.url}${route}`, {
      method,
      headers: {
        authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON (logs, files)
    }
    return { status: response.status, body: parsed };
  }

  async createUser(name: string, password: string): Promise<void> {
    const { status, body } = await this.request('POST', '/api/users', { name, password });
    if (status !== 201 && status !== 200)
      throw new Error(`create user ${name}: ${status} ${JSON.stringify(body)}`);
  }

  /** Pushes a workflow (its source text) into this user's personal space, or into `space`. */
  async push(source: string, space?: string): Promise<void> {
    const route = space === undefined ? '/api/workflows' : `/api/spaces/${space}/workflows`;
    const { status, body } = await this.request('POST', route, { source });
    if (status !== 201) throw new Error(`push as ${this.name}: ${status} ${JSON.stringify(body)}`);
  }

  async submit(workflow: string, params: Record<string, unknown> = {}): Promise<string> {
    const { status, body } = await this.request('POST', '/api/jobs', { workflow, params });
    if (status !== 201)
      throw new Error(`submit ${workflow} as ${this.name}: ${status} ${JSON.stringify(body)}`);
    return (body as { id: string }).id;
  }

  async job(id: string): Promise<JobDetail> {
    const { status, body } = await this.request('GET', `/api/jobs/${id}`);
    if (status !== 200) throw new Error(`job ${id}: ${status} ${JSON.stringify(body)}`);
    return body as JobDetail;
  }

  /** Polls until the job is in a final state (bounded). */
  async waitFor(id: string, timeoutMs = 60_000): Promise<JobDetail> {
    let last: JobDetail | undefined;
    return until(
      () => `job ${id} to end: still ${last?.state} after ${timeoutMs} ms`,
      async () => {
        last = await this.job(id);
        return finalStates.has(last.state) ? last : undefined;
      },
      timeoutMs,
    );
  }

  async run(workflow: string, params: Record<string, unknown> = {}, timeoutMs?: number): Promise<JobDetail> {
    return this.waitFor(await this.submit(workflow, params), timeoutMs);
  }
}
