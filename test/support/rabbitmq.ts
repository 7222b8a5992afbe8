/**
 * The machine's RabbitMQ broker (127.0.0.1:5672, guest/guest) for bus tests: every test file gets a fresh
 * vhost of its own, created and deleted with `rabbitmqctl` (argument arrays, no shell).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const brokerUrl = process.env.STEWARD_TEST_AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

export async function rabbitmqctl(...args: string[]): Promise<string> {
  const { stdout } = await run('rabbitmqctl', args, { timeout: 30_000 });
  return stdout;
}

/** Creates `steward-test-<random>` with full permissions for guest; returns its name. */
export async function createVhost(label: string): Promise<string> {
  const vhost = `steward-test-${label}-${randomBytes(4).toString('hex')}`;
  await rabbitmqctl('add_vhost', vhost);
  await rabbitmqctl('set_permissions', '-p', vhost, 'guest', '.*', '.*', '.*');
  return vhost;
}

export async function deleteVhost(vhost: string): Promise<void> {
  await rabbitmqctl('delete_vhost', vhost).catch(() => {});
}

/** Drops every client connection to one vhost (as a network failure would). */
export async function closeVhostConnections(vhost: string): Promise<void> {
  await rabbitmqctl('close_all_connections', '-p', vhost, 'test: dropping connections');
}

/** Ready and unacknowledged messages of a vhost's offers queue (-1 each when there is none). */
export async function offersQueueOf(vhost: string): Promise<{ ready: number; unacked: number }> {
  const out = await rabbitmqctl(
    'list_queues',
    '-p',
    vhost,
    '--no-table-headers',
    '--quiet',
    'name',
    'messages_ready',
    'messages_unacknowledged',
  );
  for (const line of out.split('\n')) {
    const [name, ready, unacked] = line.trim().split(/\s+/);
    if (name?.endsWith('.offers')) return { ready: Number(ready), unacked: Number(unacked) };
  }
  return { ready: -1, unacked: -1 };
}
