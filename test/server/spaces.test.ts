/**
 * Spaces over the REST API: roles, local groups, the error for each refusal, workflow deletion, and the
 * version a job pins at submit.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createOfferVerifier, type JobOffer } from '../../src/protocol/index.js';
import { backends } from '../store/backends.js';
import { bodyOf, errorOf, REPORT_WORKFLOW, startHarness, type Harness } from './harness.js';

describe.each(backends)('spaces, roles and groups on $name', (backend) => {
  let h: Harness;
  let admin: string;
  let alice: string;
  let bob: string;
  let carol: string;

  beforeEach(async (context) => {
    h = await startHarness({ backend, title: context.task.name });
    admin = await h.adminToken();
    alice = await h.userToken('alice');
    bob = await h.userToken('bob');
    carol = await h.userToken('carol');
  });
  afterEach(async () => {
    await h.dispose();
  });

  const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, token: string, body?: unknown) =>
    h.raw({ method, url, token, ...(body !== undefined ? { body } : {}) });
  const push = (token: string, space?: string, source = REPORT_WORKFLOW) =>
    call('POST', space === undefined ? '/api/workflows' : `/api/spaces/${space}/workflows`, token, {
      source,
    });
  const submit = (token: string, workflow: string) =>
    call('POST', '/api/jobs', token, { workflow, params: { region: 'emea' } });

  async function sharedSpace(members: [string, string, 'viewer' | 'editor' | 'owner'][]): Promise<void> {
    expect((await call('POST', '/api/spaces', admin, { name: 'finance', description: 'money' })).status).toBe(
      201,
    );
    for (const [kind, name, role] of members) {
      const added = await call('PUT', '/api/spaces/finance/members', admin, { kind, name, role });
      expect(added.status, added.text).toBe(200);
    }
  }

  it('answers each refusal with its own code and a message naming the missing right and who grants it', async () => {
    await sharedSpace([
      ['user', 'alice', 'editor'],
      ['user', 'bob', 'viewer'],
    ]);
    const cases = [
      ['unknown space', await push(alice, 'nowhere'), 404, 'STEWARD_SPACE_NOT_FOUND', 'created by an admin'],
      [
        'not a member',
        await push(carol, 'finance'),
        403,
        'STEWARD_SPACE_NOT_MEMBER',
        "space's owners or an admin",
      ],
      ['viewer pushing', await push(bob, 'finance'), 403, 'STEWARD_SPACE_ROLE_REQUIRED', 'you are viewer'],
      ['personal space', await push(bob, 'alice'), 403, 'STEWARD_SPACE_PERSONAL', "alice's personal space"],
      [
        'slash',
        await submit(alice, 'finance/report/x'),
        400,
        'STEWARD_WORKFLOW_REF_INVALID',
        'more than one "/"',
      ],
      [
        'slash after version',
        await submit(alice, 'report@1/x'),
        400,
        'STEWARD_WORKFLOW_REF_INVALID',
        'wrong place',
      ],
      ['leading slash', await submit(alice, '/report'), 400, 'STEWARD_WORKFLOW_REF_INVALID', 'wrong place'],
      [
        'slash in the file',
        await push(alice, undefined, REPORT_WORKFLOW.replace('name: report', 'name: finance/report')),
        400,
        'STEWARD_WORKFLOW_REF_INVALID',
        '--space',
      ],
    ] as const;
    for (const [what, response, status, code, fragment] of cases) {
      expect(response.status, `${what}: ${response.text}`).toBe(status);
      expect(errorOf(response).code, what).toBe(code);
      expect(errorOf(response).message, what).toContain(fragment);
    }
    // The editor pushes and the viewer runs.
    expect((await push(alice, 'finance')).status).toBe(201);
    expect((await submit(bob, 'finance/report')).status).toBe(201);
    expect(
      bodyOf('listSpaceWorkflows', await call('GET', '/api/spaces/finance/workflows', bob)).workflows,
    ).toEqual([
      expect.objectContaining({ space: 'finance', name: 'report', latestVersion: 1, updatedBy: 'alice' }),
    ]);
    // A space holding workflows cannot be deleted; once they are, it can.
    const notEmpty = await call('DELETE', '/api/spaces/finance', admin);
    expect(notEmpty.status).toBe(409);
    expect(errorOf(notEmpty).code).toBe('STEWARD_SPACE_NOT_EMPTY');
    expect(errorOf(notEmpty).message).toContain('steward workflow delete finance/NAME');
    expect(errorOf(await call('DELETE', '/api/spaces/finance/workflows/report', bob)).code).toBe(
      'STEWARD_SPACE_ROLE_REQUIRED',
    );
    expect(
      bodyOf('deleteSpaceWorkflow', await call('DELETE', '/api/spaces/finance/workflows/report', alice)),
    ).toEqual({
      space: 'finance',
      name: 'report',
      versions: 1,
    });
    expect((await call('DELETE', '/api/spaces/finance', admin)).status).toBe(204);
    expect(errorOf(await call('GET', '/api/spaces/finance', admin)).code).toBe('STEWARD_SPACE_NOT_FOUND');
    const actions = (await h.server.store.listAudit({ limit: 100 })).map((e) => `${e.action} ${e.target}`);
    expect(actions).toEqual(
      expect.arrayContaining([
        'space.create finance',
        'space.member.add finance',
        'workflow.push finance/report@1',
        'workflow.delete finance/report',
        'space.delete finance',
        'space.denied finance',
        'space.denied alice',
      ]),
    );
  });

  it('gives members of a local group their role, and takes it away when they leave the group', async () => {
    expect((await call('POST', '/api/groups', admin, { name: 'analysts' })).status).toBe(201);
    expect(
      bodyOf('addGroupMember', await call('PUT', '/api/groups/analysts/members/carol', admin)).members,
    ).toEqual(['carol']);
    await sharedSpace([
      ['user', 'alice', 'owner'],
      ['group', 'analysts', 'viewer'],
    ]);
    expect((await push(alice, 'finance')).status).toBe(201);
    expect((await submit(carol, 'finance/report')).status).toBe(201);
    // An owner manages members; a viewer does not; nobody adds members to a personal space.
    expect(
      (await call('PUT', '/api/spaces/finance/members', alice, { kind: 'user', name: 'bob', role: 'viewer' }))
        .status,
    ).toBe(200);
    expect(
      errorOf(
        await call('PUT', '/api/spaces/finance/members', carol, { kind: 'user', name: 'dan', role: 'owner' }),
      ).code,
    ).toBe('STEWARD_SPACE_ROLE_REQUIRED');
    expect(
      errorOf(
        await call('PUT', '/api/spaces/alice/members', alice, { kind: 'user', name: 'bob', role: 'viewer' }),
      ).code,
    ).toBe('STEWARD_SPACE_NOT_SHARED');
    expect(
      (
        await call('PUT', '/api/spaces/finance/members', admin, {
          kind: 'group',
          name: 'nope',
          role: 'viewer',
        })
      ).status,
    ).toBe(404);
    // Non-admins cannot manage groups or create spaces.
    expect((await call('PUT', '/api/groups/analysts/members/bob', alice)).status).toBe(403);
    expect((await call('POST', '/api/spaces', alice, { name: 'mine' })).status).toBe(403);
    // A shared space cannot take a user's name (it is their personal space's name).
    expect(errorOf(await call('POST', '/api/spaces', admin, { name: 'bob' })).code).toBe('STEWARD_CONFLICT');
    // Nor can a new user take a shared space's name (their personal space would be missing).
    const taken = await call('POST', '/api/users', admin, { name: 'finance', password: 'finance-pass-1' });
    expect(taken.status, taken.text).toBe(409);
    expect(errorOf(taken).message).toContain('shared space');

    const listed = await call('GET', '/api/spaces', carol);
    expect(bodyOf('listSpaces', listed).spaces.map((s) => [s.name, s.role])).toEqual([
      ['carol', 'owner'],
      ['finance', 'viewer'],
    ]);
    const shown = await call('GET', '/api/spaces/finance', carol);
    expect(bodyOf('showSpace', shown)).toMatchObject({ kind: 'shared', role: 'viewer', workflows: 1 });

    expect(
      bodyOf('removeGroupMember', await call('DELETE', '/api/groups/analysts/members/carol', admin)).members,
    ).toEqual([]);
    expect(errorOf(await submit(carol, 'finance/report')).code).toBe('STEWARD_SPACE_NOT_MEMBER');
    const audit = (await h.server.store.listAudit({ limit: 100 })).map((e) => e.action);
    expect(audit).toEqual(
      expect.arrayContaining(['group.create', 'group.member.add', 'group.member.remove', 'space.member.add']),
    );
  });

  it('pins the version resolved at submit: a later push or a delete never changes what the job loads', async () => {
    const verifier = createOfferVerifier([h.server.publicKeyPem]);
    const offers: JobOffer[] = [];
    await h.bus.consumeOffers(async (delivery) => void offers.push(verifier.verify(delivery.body)), {
      prefetch: 10,
    });
    expect((await push(alice)).status).toBe(201);
    // Admins read personal spaces (they cannot push there: see the refusals test).
    expect(
      bodyOf('showSpaceWorkflow', await call('GET', '/api/spaces/alice/workflows/report', admin)).createdBy,
    ).toBe('alice');
    expect(errorOf(await call('GET', '/api/spaces/alice/workflows', bob)).code).toBe(
      'STEWARD_SPACE_NOT_MEMBER',
    );
    const job = await submit(alice, 'report');
    expect(job.status).toBe(201);
    expect(bodyOf('submitJob', job).workflow).toEqual({ space: 'alice', name: 'report', version: 1 });
    const changed = REPORT_WORKFLOW.replace('Sums a few numbers', 'changed later');
    expect(bodyOf('pushWorkflow', await push(alice, undefined, changed)).version).toBe(2);
    expect(bodyOf('deleteWorkflow', await call('DELETE', '/api/workflows/report', alice)).versions).toBe(2);
    // Deleted: it cannot be run or shown any more.
    expect((await submit(alice, 'report')).status).toBe(404);
    expect((await submit(alice, 'report@1')).status).toBe(404);
    expect((await call('GET', '/api/workflows/report', alice)).status).toBe(404);

    await expect.poll(() => offers.length).toBe(1);
    const offer = offers[0]!;
    const fetched = await h.raw({
      method: 'GET',
      url: `/api/exec/jobs/${offer.jobId}/workflow`,
      token: offer.jobToken,
    });
    expect(fetched.status, fetched.text).toBe(200);
    expect(bodyOf('execWorkflow', fetched).source).toBe(REPORT_WORKFLOW);
    const detail = await call('GET', `/api/jobs/${offer.jobId}`, alice);
    expect(bodyOf('showJob', detail).workflow).toEqual({
      space: 'alice',
      name: 'report',
      version: 1,
      pushedBy: 'alice',
    });
    // Pushing again after a delete starts a new workflow, numbered after the deleted versions.
    expect(bodyOf('pushWorkflow', await push(alice)).version).toBe(3);
  });
});
