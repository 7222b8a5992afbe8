/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access -- HTTP response bodies are checked by assertions, not by static types. */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { backends } from '../store/backends.js';
import { eventually, REPORT_WORKFLOW, startHarness, type Harness } from './harness.js';

describe.each(backends)('restart on $name', (backend) => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.dispose();
    h = undefined;
  });

  it('keeps users, tokens, workflows, jobs, results and the signing key across a restart', async (context) => {
    h = await startHarness({ backend, title: context.task.name });
    const alice = await h.userToken('alice');
    const apiToken = (
      await h.request({ method: 'POST', url: '/api/tokens', token: alice, body: { name: 'ci' } })
    ).json.token as string;
    await h.request({
      method: 'POST',
      url: '/api/workflows',
      token: alice,
      body: { source: REPORT_WORKFLOW },
    });
    let jobToken = '';
    await h.bus.consumeOffers(
      async (delivery) => {
        jobToken = (JSON.parse((delivery.body as { payload: string }).payload) as { jobToken: string })
          .jobToken;
      },
      { prefetch: 1 },
    );
    const job = (
      await h.request({
        method: 'POST',
        url: '/api/jobs',
        token: alice,
        body: { workflow: 'report', params: { region: 'emea' } },
      })
    ).json;
    expect(job.state).toBe('offered');
    await eventually(() => jobToken);
    const upload = await h.request({
      method: 'PUT',
      url: `/api/exec/jobs/${job.id}/results/notes.txt?kind=file`,
      token: jobToken,
      payload: 'kept',
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(upload.status).toBe(204);
    const keyBefore = h.server.publicKeyPem;
    const keyFile = path.join(h.dataDir, 'keys', 'offer-signing.pem');
    const keyText = readFileSync(keyFile, 'utf8');
    expect(statSync(keyFile).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(keyFile)).mode & 0o777).toBe(0o700);

    await h.stop();
    await h.restart();

    expect(h.server.publicKeyPem).toBe(keyBefore);
    expect(readFileSync(keyFile, 'utf8')).toBe(keyText);
    expect((await h.request({ method: 'GET', url: '/api/me', token: apiToken })).json.user).toBe('alice');
    const fresh = await h.login('alice', 'password-of-alice');
    const shown = await h.request({ method: 'GET', url: `/api/jobs/${job.id}`, token: fresh });
    expect(shown.json).toMatchObject({ id: job.id, state: 'offered', params: { region: 'emea', limit: 10 } });
    expect(
      (await h.request({ method: 'GET', url: '/api/workflows/report', token: fresh })).json.version,
    ).toBe(1);
    expect(
      (await h.request({ method: 'GET', url: `/api/jobs/${job.id}/results/notes.txt`, token: fresh })).text,
    ).toBe('kept');
    // The job token is a hash in the store, so it still works after the restart.
    expect(
      (await h.request({ method: 'GET', url: `/api/exec/jobs/${job.id}/workflow`, token: jobToken })).status,
    ).toBe(200);
  });
});
