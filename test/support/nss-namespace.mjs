/**
 * Runs inside `unshare --mount --propagation private` (started by test/support/nss.ts): bind-mounts the
 * test's own nsswitch.conf, nslcd.conf and nslcd socket dir over the machine's, starts nslcd against the
 * test's slapd, then runs the given command with the same stdio. The mounts exist only in this private
 * namespace, so the machine's NSS configuration is never changed. Usage:
 *   node nss-namespace.mjs SPEC.json COMMAND [ARG...]
 * SPEC: {"binds": [[source, target], ...], "socket": "/run/nslcd/socket"}
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

const [specFile, command, ...args] = process.argv.slice(2);
if (!specFile || !command) {
  process.stderr.write('usage: nss-namespace.mjs SPEC.json COMMAND [ARG...]\n');
  process.exit(2);
}
const spec = JSON.parse(readFileSync(specFile, 'utf8'));
for (const [source, target] of spec.binds) execFileSync('mount', ['--bind', source, target]);

const nslcd = spawn('/usr/sbin/nslcd', ['-n'], { stdio: ['ignore', 'inherit', 'inherit'] });
const deadline = Date.now() + 10_000;
while (!existsSync(spec.socket)) {
  if (nslcd.exitCode !== null || Date.now() > deadline) {
    process.stderr.write(`nss-namespace: nslcd did not create ${spec.socket}\n`);
    nslcd.kill('SIGKILL');
    process.exit(1);
  }
  await new Promise((resolve) => setTimeout(resolve, 20));
}

const child = spawn(command, args, { stdio: 'inherit' });
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => child.kill(signal));
child.on('exit', (code, signal) => {
  nslcd.kill('SIGTERM');
  process.exit(code ?? (signal ? 128 : 1));
});
