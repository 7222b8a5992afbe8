/**
 * A private OpenLDAP server for tests: its own slapd.conf, database and TLS material (a CA generated here
 * with openssl) in a temp dir, listening on free loopback ports for ldap:// (StartTLS offered) and ldaps://.
 * The directory is loaded through the server itself (so the memberOf overlay maintains memberOf) with:
 *
 * - people: alice (admin through a nested group), bob (plain user), carol (not in the allowed group), and
 *   dave (allowed, used by tests that delete or move him); posixAccount with uid ≥ 10000.
 * - groups: posix groups (primary groups and a shared `stldata` group) for NSS, and groupOfNames
 *   `steward-admins` ⊂ `steward-users` (nested) for roles and the allowed-users policy.
 * - a service account `cn=steward-svc,ou=services` that may read people and groups.
 *
 * Nothing outside the temp dir is touched; `stop()` kills slapd and removes the dir.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'ldapts';
import { freePort, tempDir } from './steward.js';
import { until } from './wait.js';

const execFileAsync = promisify(execFile);

export const BASE_DN = 'dc=steward,dc=test';
export const PEOPLE_DN = `ou=people,${BASE_DN}`;
export const GROUPS_DN = `ou=groups,${BASE_DN}`;
export const SERVICE_DN = `cn=steward-svc,ou=services,${BASE_DN}`;
export const SERVICE_PASSWORD = 'service-password-for-tests';
export const ADMINS_GROUP_DN = `cn=steward-admins,${GROUPS_DN}`;
export const USERS_GROUP_DN = `cn=steward-users,${GROUPS_DN}`;
const ROOT_DN = `cn=root,${BASE_DN}`;
const ROOT_PASSWORD = 'root-password-for-tests';

export interface LdapPerson {
  uid: string;
  uidNumber: number;
  gidNumber: number;
  password: string;
}

/** Test people. uids are prefixed so they never collide with real accounts of the machine. */
export function testPeople(tag: string): Record<'alice' | 'bob' | 'carol' | 'dave', LdapPerson> {
  return {
    alice: { uid: `stla${tag}`, uidNumber: 10501, gidNumber: 10501, password: 'alice-secret-1' },
    bob: { uid: `stlb${tag}`, uidNumber: 10502, gidNumber: 10502, password: 'bob-secret-2' },
    carol: { uid: `stlc${tag}`, uidNumber: 10503, gidNumber: 10503, password: 'carol-secret-3' },
    dave: { uid: `stld${tag}`, uidNumber: 10504, gidNumber: 10504, password: 'dave-secret-4' },
  };
}
export const DATA_GROUP = { cn: 'stldata', gidNumber: 20501 };

export class Slapd {
  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly tlsPort: number,
    readonly caFile: string,
    readonly people: ReturnType<typeof testPeople>,
    readonly homeRoot: string,
    private child: ChildProcess | undefined,
    private output: { text: string },
  ) {}

  get url(): string {
    return `ldap://127.0.0.1:${this.port}`;
  }
  get ldapsUrl(): string {
    return `ldaps://127.0.0.1:${this.tlsPort}`;
  }

  /** Starts slapd and loads the test directory. `homeRoot` is where the people's homeDirectory points. */
  static async start(options: { tag: string; homeRoot: string }): Promise<Slapd> {
    const dir = await tempDir('slapd');
    const output = { text: '' };
    try {
      const caFile = await makeCertificates(dir);
      await mkdir(path.join(dir, 'data'), { mode: 0o700 });
      await writeFile(path.join(dir, 'slapd.conf'), slapdConf(dir), { mode: 0o600 });
      const slapd = new Slapd(
        dir,
        await freePort(),
        await freePort(),
        caFile,
        testPeople(options.tag),
        options.homeRoot,
        undefined,
        output,
      );
      await slapd.run();
      await slapd.load();
      return slapd;
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw new Error(`slapd did not start: ${(error as Error).message}\n${output.text}`, { cause: error });
    }
  }

  /** (Re)starts slapd on the same ports and data. */
  async run(): Promise<void> {
    const child = spawn(
      '/usr/sbin/slapd',
      [
        '-d',
        '0',
        '-f',
        path.join(this.dir, 'slapd.conf'),
        '-h',
        `ldap://127.0.0.1:${this.port}/ ldaps://127.0.0.1:${this.tlsPort}/`,
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child = child;
    child.stdout.on('data', (chunk: Buffer) => (this.output.text += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (this.output.text += chunk.toString()));
    await until(
      'slapd to answer (15 s)',
      async () => {
        if (child.exitCode !== null) throw new Error(`slapd exited with ${child.exitCode}`);
        const client = new Client({ url: this.url, connectTimeout: 500, timeout: 1000 });
        try {
          await client.bind(ROOT_DN, ROOT_PASSWORD);
          return true;
        } catch {
          return false;
        } finally {
          await client.unbind().catch(() => undefined);
        }
      },
      15_000,
    );
  }

  /** Stops slapd (data kept, so `run()` brings it back). */
  async halt(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }

  async stop(): Promise<void> {
    await this.halt();
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Runs `fn` with a client bound as the directory's root. */
  async admin<T>(fn: (client: Client) => Promise<T>): Promise<T> {
    const client = new Client({ url: this.url, timeout: 5000 });
    try {
      await client.bind(ROOT_DN, ROOT_PASSWORD);
      return await fn(client);
    } finally {
      await client.unbind().catch(() => undefined);
    }
  }

  personDn(uid: string): string {
    return `uid=${uid},${PEOPLE_DN}`;
  }

  private async load(): Promise<void> {
    const { alice, bob, carol, dave } = this.people;
    await this.admin(async (client) => {
      await client.add(BASE_DN, { objectClass: ['dcObject', 'organization'], dc: 'steward', o: 'Steward' });
      for (const ou of ['people', 'groups', 'services']) {
        await client.add(`ou=${ou},${BASE_DN}`, { objectClass: 'organizationalUnit', ou });
      }
      await client.add(SERVICE_DN, {
        objectClass: ['person'],
        cn: 'steward-svc',
        sn: 'service',
        userPassword: SERVICE_PASSWORD,
      });
      for (const person of [alice, bob, carol, dave]) {
        await client.add(this.personDn(person.uid), {
          objectClass: ['inetOrgPerson', 'posixAccount'],
          uid: person.uid,
          cn: person.uid,
          sn: person.uid,
          uidNumber: String(person.uidNumber),
          gidNumber: String(person.gidNumber),
          homeDirectory: path.join(this.homeRoot, person.uid),
          loginShell: '/bin/sh',
          userPassword: person.password,
        });
        await client.add(`cn=${person.uid},${GROUPS_DN}`, {
          objectClass: 'posixGroup',
          cn: person.uid,
          gidNumber: String(person.gidNumber),
        });
      }
      await client.add(`cn=${DATA_GROUP.cn},${GROUPS_DN}`, {
        objectClass: 'posixGroup',
        cn: DATA_GROUP.cn,
        gidNumber: String(DATA_GROUP.gidNumber),
        memberUid: [alice.uid, bob.uid],
      });
      // Nested: admins are members of the users group, so alice is allowed through it.
      await client.add(ADMINS_GROUP_DN, {
        objectClass: 'groupOfNames',
        cn: 'steward-admins',
        member: [this.personDn(alice.uid)],
      });
      await client.add(USERS_GROUP_DN, {
        objectClass: 'groupOfNames',
        cn: 'steward-users',
        member: [ADMINS_GROUP_DN, this.personDn(bob.uid), this.personDn(dave.uid)],
      });
      await client.add(`cn=steward-outsiders,${GROUPS_DN}`, {
        objectClass: 'groupOfNames',
        cn: 'steward-outsiders',
        member: [this.personDn(carol.uid)],
      });
    });
  }
}

function slapdConf(dir: string): string {
  const schema = '/etc/ldap/schema';
  return `include ${schema}/core.schema
include ${schema}/cosine.schema
include ${schema}/nis.schema
include ${schema}/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile ${path.join(dir, 'slapd.pid')}
argsfile ${path.join(dir, 'slapd.args')}
TLSCACertificateFile ${path.join(dir, 'ca.pem')}
TLSCertificateFile ${path.join(dir, 'server.pem')}
TLSCertificateKeyFile ${path.join(dir, 'server.key')}

database mdb
maxsize 67108864
suffix "${BASE_DN}"
rootdn "${ROOT_DN}"
rootpw ${ROOT_PASSWORD}
directory ${path.join(dir, 'data')}
index objectClass,uid,memberUid,member eq
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
memberof-refint TRUE

access to attrs=userPassword
  by self write
  by anonymous auth
  by * none
access to *
  by * read
`;
}

/** A CA and a server certificate for 127.0.0.1/localhost, signed by it. Returns the CA file. */
async function makeCertificates(dir: string): Promise<string> {
  const file = (name: string): string => path.join(dir, name);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await execFileAsync('openssl', [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    file('ca.key'),
    '-out',
    file('ca.pem'),
    '-days',
    '2',
    '-subj',
    '/CN=Steward test CA',
  ]);
  await execFileAsync('openssl', [
    'req',
    ...ec,
    '-keyout',
    file('server.key'),
    '-out',
    file('server.csr'),
    '-subj',
    '/CN=127.0.0.1',
  ]);
  await writeFile(file('san.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  await execFileAsync('openssl', [
    'x509',
    '-req',
    '-in',
    file('server.csr'),
    '-CA',
    file('ca.pem'),
    '-CAkey',
    file('ca.key'),
    '-CAcreateserial',
    '-out',
    file('server.pem'),
    '-days',
    '2',
    '-extfile',
    file('san.ext'),
  ]);
  return file('ca.pem');
}
