/**
 * The attack of issue 11, as root with real OS accounts through a real `steward up`: bob pushes his own file
 * under the name of alice's workflow, hoping alice's next run executes his code as her. With spaces, bob's
 * push lands in his own personal space (or is refused when he aims at hers), alice's run runs her version,
 * and her private files are untouched. Once through the CLI, once through the REST API.
 */
import { chmod, chown, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiUser } from '../support/api.js';
import { OsUsers, type TestUser } from '../support/os-users.js';
import { CliUser, StewardInstance, isRoot, tempDir } from '../support/steward.js';

/** Alice's own workflow: reports who ran it. */
function honest(name: string) {
  return {
    name,
    steps: [
      {
        id: 'main',
        shell: ['echo "the honest report"', 'id -un']
          .map((line) => `${line} >> "$STEWARD_OUTPUT_DIR/who.txt"`)
          .join('\n'),
      },
    ],
    outputs: ['main'],
  };
}

/** Bob's file with the same name: reads alice's private file and writes into her home. */
function hostile(name: string) {
  return {
    name,
    steps: [
      {
        id: 'main',
        shell: [
          'cat "$HOME/secret.txt" > "$STEWARD_OUTPUT_DIR/who.txt" 2>&1 || true',
          'echo "bob was here" >> "$HOME/secret.txt"',
          'touch "$HOME/bob-was-here"',
        ].join('\n'),
      },
    ],
    outputs: ['main'],
  };
}

describe.runIf(isRoot)(
  "a user cannot make their code run as another user by pushing under the other's workflow name",
  () => {
    const osUsers = new OsUsers();
    const password = 'spaces-attack-password-1';
    let steward: StewardInstance;
    let scratch: string;
    let alice: TestUser;
    let bob: TestUser;
    let aliceCli: CliUser;
    let bobCli: CliUser;
    let aliceApi: ApiUser;
    let bobApi: ApiUser;
    let admin: ApiUser;

    const secretFile = () => path.join('/home', alice.name, 'secret.txt');
    const secretText = 'alice-private-data\n';

    async function writeWorkflow(file: string, workflow: object): Promise<string> {
      const target = path.join(scratch, file);
      await writeFile(target, stringify(workflow));
      await chmod(target, 0o644);
      return target;
    }

    /** Alice's private file is exactly as she left it, and nothing new appeared in her home. */
    async function expectAliceUntouched(before: { mtimeMs: number }): Promise<void> {
      expect(await readFile(secretFile(), 'utf8')).toBe(secretText);
      const after = await stat(secretFile());
      expect(after.mtimeMs).toBe(before.mtimeMs);
      expect(after.mode & 0o777).toBe(0o600);
      await expect(stat(path.join('/home', alice.name, 'bob-was-here'))).rejects.toThrow();
    }

    beforeAll(async () => {
      scratch = await tempDir('spaces-attack');
      await chmod(scratch, 0o755);
      alice = await osUsers.user('sa');
      bob = await osUsers.user('sb');
      steward = await StewardInstance.start();
      admin = await ApiUser.login(steward.url, 'admin', steward.adminPassword);
      for (const user of [alice, bob]) await admin.createUser(user.name, password);
      aliceCli = await CliUser.create(alice.name, steward.url);
      bobCli = await CliUser.create(bob.name, steward.url);
      await aliceCli.login(password);
      await bobCli.login(password);
      aliceApi = await ApiUser.login(steward.url, alice.name, password);
      bobApi = await ApiUser.login(steward.url, bob.name, password);
      await writeFile(secretFile(), secretText);
      await chown(secretFile(), alice.uid, alice.gid);
      await chmod(secretFile(), 0o600);
    }, 90_000);

    afterAll(async () => {
      await aliceCli?.cleanup();
      await bobCli?.cleanup();
      await steward?.destroy();
      await osUsers.cleanup();
      if (scratch) await rm(scratch, { recursive: true, force: true });
    }, 30_000);

    it("through the CLI: bob's push lands in his own space or is refused, and alice's run runs her version", async () => {
      const before = await stat(secretFile());
      const mine = await aliceCli.run([
        'workflow',
        'push',
        await writeWorkflow('alice-report.yaml', honest('report')),
      ]);
      expect(mine.code, mine.stderr).toBe(0);
      expect(mine.stdout).toContain(`pushed ${alice.name}/report@1`);

      const evil = await writeWorkflow('bob-report.yaml', hostile('report'));
      // Aimed at alice's space: refused, with the reason and who could grant it.
      const aimed = await bobCli.run(['workflow', 'push', '--space', alice.name, evil]);
      expect(aimed.code).toBe(1);
      expect(aimed.stderr).toContain('STEWARD_SPACE_PERSONAL');
      expect(aimed.stderr).toContain(`${alice.name}'s personal space`);
      // A plain push: the same name, but in bob's own space.
      const plain = await bobCli.run(['workflow', 'push', evil]);
      expect(plain.code, plain.stderr).toBe(0);
      expect(plain.stdout).toContain(`pushed ${bob.name}/report@1`);
      // Even an admin cannot push into alice's personal space.
      const byAdmin = await admin.request('POST', `/api/spaces/${alice.name}/workflows`, {
        source: stringify(hostile('report')),
      });
      expect(byAdmin.status).toBe(403);
      expect((byAdmin.body as { error: { code: string } }).error.code).toBe('STEWARD_SPACE_PERSONAL');

      // bob cannot even see alice's workflow.
      const peek = await bobCli.run(['workflow', 'show', `${alice.name}/report`]);
      expect(peek.code).toBe(1);
      expect(peek.stderr).toContain('STEWARD_SPACE_NOT_MEMBER');
      const list = await aliceCli.run(['workflow', 'list', '--json']);
      expect(
        (JSON.parse(list.stdout) as { workflows: { space: string; name: string; latestVersion: number }[] })
          .workflows,
      ).toEqual([expect.objectContaining({ space: alice.name, name: 'report', latestVersion: 1 })]);

      const ran = await aliceCli.run(['run', 'report', '--wait']);
      expect(ran.code, ran.stderr + ran.stdout).toBe(0);
      const jobId = /submitted job (\S+)/.exec(ran.stderr)?.[1];
      expect(jobId, ran.stderr).toBeDefined();
      const detail = await aliceCli.run(['job', jobId!, '--json']);
      const job = JSON.parse(detail.stdout) as {
        workflow: { space: string; name: string; version: number; pushedBy: string };
        executor: { osUser: string };
      };
      expect(job.workflow).toEqual({ space: alice.name, name: 'report', version: 1, pushedBy: alice.name });
      expect(job.executor.osUser).toBe(alice.name);
      const shown = await aliceCli.run(['job', jobId!]);
      expect(shown.stdout).toContain(`${alice.name}/report@1 (pushed by ${alice.name})`);
      const who = await aliceApi.request('GET', `/api/jobs/${jobId}/results/who.txt`);
      expect(who.status).toBe(200);
      expect(String(who.body)).toBe(`the honest report\n${alice.name}\n`);
      await expectAliceUntouched(before);
    }, 120_000);

    it('through the REST API: the same attack fails the same way', async () => {
      const before = await stat(secretFile());
      const mine = await aliceApi.request('POST', '/api/workflows', { source: stringify(honest('summary')) });
      expect(mine.status, JSON.stringify(mine.body)).toBe(201);
      expect(mine.body).toMatchObject({
        space: alice.name,
        name: 'summary',
        version: 1,
        createdBy: alice.name,
      });

      const aimed = await bobApi.request('POST', `/api/spaces/${alice.name}/workflows`, {
        source: stringify(hostile('summary')),
      });
      expect(aimed.status).toBe(403);
      expect(aimed.body).toMatchObject({ error: { code: 'STEWARD_SPACE_PERSONAL' } });
      const plain = await bobApi.request('POST', '/api/workflows', { source: stringify(hostile('summary')) });
      expect(plain.status).toBe(201);
      expect(plain.body).toMatchObject({ space: bob.name, name: 'summary', version: 1, createdBy: bob.name });

      // bob can neither list, read nor run alice's workflows.
      for (const route of [
        `/api/spaces/${alice.name}/workflows`,
        `/api/spaces/${alice.name}/workflows/summary`,
        `/api/spaces/${alice.name}/workflows/summary/versions`,
        `/api/spaces/${alice.name}/workflows/summary/versions/1`,
      ]) {
        const { status, body } = await bobApi.request('GET', route);
        expect(status, route).toBe(403);
        expect(body, route).toMatchObject({ error: { code: 'STEWARD_SPACE_NOT_MEMBER' } });
      }
      const bobRuns = await bobApi.request('POST', '/api/jobs', { workflow: `${alice.name}/summary` });
      expect(bobRuns.status).toBe(403);

      const run = await aliceApi.run('summary', {}, 60_000);
      expect(run.state, JSON.stringify(run)).toBe('succeeded');
      expect(run.workflow).toEqual({ space: alice.name, name: 'summary', version: 1, pushedBy: alice.name });
      expect(run.executor?.osUser).toBe(alice.name);
      const who = await aliceApi.request('GET', `/api/jobs/${run.id}/results/who.txt`);
      expect(String(who.body)).toBe(`the honest report\n${alice.name}\n`);
      await expectAliceUntouched(before);

      // Every push is in the audit log, and so is every refused one.
      const audit = await admin.request('GET', '/api/audit?action=workflow.push');
      const targets = (audit.body as { entries: { target: string }[] }).entries.map((e) => e.target);
      expect(targets).toEqual(expect.arrayContaining([`${alice.name}/summary@1`, `${bob.name}/summary@1`]));
      const denied = await admin.request('GET', `/api/audit?action=space.denied&actor=${bob.name}`);
      expect((denied.body as { entries: unknown[] }).entries).toContainEqual(
        expect.objectContaining({
          target: alice.name,
          detail: { action: 'push', code: 'STEWARD_SPACE_PERSONAL' },
        }),
      );
    }, 120_000);

    it('manages groups, shared spaces, members and deletions through the CLI, each change audited', async () => {
      const adminCli = await CliUser.create('admin', steward.url);
      try {
        await adminCli.login(steward.adminPassword);
        const report = (who: string) => path.join(scratch, `${who}-report.yaml`);
        const steps: [CliUser, string[], number, string][] = [
          [adminCli, ['group', 'add', 'ops', '--description', 'operators'], 0, 'created group ops'],
          [adminCli, ['group', 'member', 'add', 'ops', bob.name], 0, `added ${bob.name} to group ops`],
          [adminCli, ['space', 'create', 'lab'], 0, 'created space lab'],
          [
            adminCli,
            ['space', 'member', 'add', 'lab', '--user', alice.name, '--role', 'owner'],
            0,
            'is owner',
          ],
          // alice, an owner, lets the ops group run the space's workflows.
          [aliceCli, ['space', 'member', 'add', 'lab', '--group', 'ops'], 0, 'group ops is viewer'],
          [aliceCli, ['workflow', 'push', '--space', 'lab', report('alice')], 0, 'pushed lab/report@1'],
          [bobCli, ['workflow', 'list', '--space', 'lab'], 0, 'lab/report'],
          [bobCli, ['workflow', 'push', '--space', 'lab', report('bob')], 1, 'STEWARD_SPACE_ROLE_REQUIRED'],
          [bobCli, ['space', 'list'], 0, 'lab'],
          [adminCli, ['group', 'list'], 0, bob.name],
          [adminCli, ['space', 'delete', 'lab'], 1, 'STEWARD_SPACE_NOT_EMPTY'],
          [bobCli, ['workflow', 'delete', 'lab/report'], 1, 'STEWARD_SPACE_ROLE_REQUIRED'],
          [aliceCli, ['workflow', 'delete', 'lab/report'], 0, 'deleted lab/report (1 version)'],
          [bobCli, ['run', 'lab/report'], 1, 'STEWARD_NOT_FOUND'],
          [adminCli, ['group', 'member', 'remove', 'ops', bob.name], 0, `removed ${bob.name} from group ops`],
          [bobCli, ['workflow', 'list', '--space', 'lab'], 1, 'STEWARD_SPACE_NOT_MEMBER'],
          [aliceCli, ['space', 'member', 'remove', 'lab', '--group', 'ops'], 0, 'removed group ops'],
          [adminCli, ['space', 'delete', 'lab'], 0, 'deleted space lab'],
          [bobCli, ['run', 'report/extra/slash'], 2, 'STEWARD_WORKFLOW_REF_INVALID'],
        ];
        for (const [user, args, code, fragment] of steps) {
          const result = await user.run(args);
          expect(result.code, `${args.join(' ')}: ${result.stderr}`).toBe(code);
          expect(code === 0 ? result.stdout : result.stderr, args.join(' ')).toContain(fragment);
        }
        const audit = await admin.request('GET', '/api/audit?limit=1000');
        const actions = new Set(
          (audit.body as { entries: { action: string }[] }).entries.map((e) => e.action),
        );
        for (const action of [
          'group.create',
          'group.member.add',
          'group.member.remove',
          'space.create',
          'space.member.add',
          'space.member.remove',
          'space.delete',
          'workflow.delete',
        ])
          expect(actions, action).toContain(action);
      } finally {
        await adminCli.cleanup();
      }
    }, 120_000);
  },
);
