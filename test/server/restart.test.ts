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
    const apiToken = (await h.call('createToken', { token: alice, body: { name: 'ci' } })).token;
    await h.call('pushWorkflow', { token: alice, body: { source: REPORT_WORKFLOW } });
    let jobToken = '';
    await h.bus.consumeOffers(
      async (delivery) => {
        jobToken = (JSON.parse((delivery.body as { payload: string }).payload) as { jobToken: string })
          .jobToken;
      },
      { prefetch: 1 },
    );
    const job = await h.call('submitJob', {
      token: alice,
      body: { workflow: 'report', params: { region: 'emea' } },
    });
    expect(job.state).toBe('offered');
    await eventually(() => jobToken);
    const upload = await h.raw({
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
    expect((await h.call('me', { token: apiToken })).user).toBe('alice');
    const fresh = await h.login('alice', 'password-of-alice');
    const shown = await h.call('showJob', { token: fresh, params: { id: job.id } });
    expect(shown).toMatchObject({ id: job.id, state: 'offered', params: { region: 'emea', limit: 10 } });
    expect((await h.call('showWorkflow', { token: fresh, params: { name: 'report' } })).version).toBe(1);
    const download = await h.call('downloadResult', {
      token: fresh,
      params: { id: job.id, name: 'notes.txt' },
    });
    expect(download.text).toBe('kept');
    // The job token is a hash in the store, so it still works after the restart.
    expect((await h.call('execWorkflow', { token: jobToken, params: { id: job.id } })).jobId).toBe(job.id);
  });
});
