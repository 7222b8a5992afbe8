/**
 * `steward doctor`: the preconditions of this machine's role, as one CheckReport. The role follows from the
 * config file: an `agent` section alone is an agent machine (`steward agent`), a `server` section with a
 * RabbitMQ bus alone is a server machine (`steward server`), anything else is `steward up` (both, on the
 * embedded bus).
 */
import {
  compileAgentConfig,
  compileServerConfig,
  type CompiledAgentConfig,
  type CompiledServerConfig,
} from '../config/index.js';
import { checkReport, StewardError, type CheckReport, type CheckResult } from '../protocol/index.js';
import { agentChecks } from './agent.js';
import { fail, oneLine } from './check.js';
import { attachedClusterBuses, serverChecks } from './server.js';

export { agentChecks, fatalAgentChecks, type AgentCheckOptions } from './agent.js';
export { brokerChecks, type NamedBus } from './broker.js';
export { attachedClusterBuses, serverChecks, type ServerCheckOptions } from './server.js';

export type MachineRole = 'agent' | 'server' | 'up';

/** A config file's sections, as `steward up|server|agent --config` read them. */
export interface DoctorInput {
  file: { server?: Record<string, unknown>; agent?: Record<string, unknown> };
  /** `--data-dir`, as the daemons take it. */
  dataDir?: string | undefined;
  /** `--user`: an OS account NSS must resolve. */
  user?: string | undefined;
}

export function roleOf(file: DoctorInput['file']): MachineRole {
  if (file.agent && !file.server) return 'agent';
  const bus = file.server?.bus as { kind?: unknown } | undefined;
  if (file.server && !file.agent && bus?.kind === 'amqp') return 'server';
  return 'up';
}

export async function doctor(input: DoctorInput): Promise<{ role: MachineRole; report: CheckReport }> {
  const role = roleOf(input.file);
  const compiled = compile(input, role);
  if ('failure' in compiled) return { role, report: checkReport([compiled.failure]) };
  const checks: CheckResult[] = [];
  if (compiled.server) {
    // The brokers of the clusters attached in the store, besides the server's own bus.
    const clusters = await attachedClusterBuses(compiled.server);
    checks.push(
      ...(await serverChecks(compiled.server, {
        role: role === 'up' ? 'up' : 'server',
        extraBuses: clusters.buses,
      })),
      ...clusters.failures,
    );
  }
  if (compiled.agent) {
    checks.push(
      ...(await agentChecks(compiled.agent, {
        role: role === 'agent' ? 'agent' : 'up',
        user: input.user,
        serverPublicKeyFile: compiled.serverPublicKeyFile,
      })),
    );
  }
  return { role, report: checkReport(checks) };
}

interface Compiled {
  server?: CompiledServerConfig;
  agent?: CompiledAgentConfig;
  serverPublicKeyFile?: string;
}

/** The configs of the role, compiled as the daemon would; a config error becomes the one failed check. */
function compile(input: DoctorInput, role: MachineRole): Compiled | { failure: CheckResult } {
  try {
    if (role === 'agent') {
      // The key file is checked (and reported) by agent.public-key rather than failing the whole config.
      const { serverPublicKeyFile, ...agent } = input.file.agent ?? {};
      return {
        agent: compileAgentConfig(agent, { dataDir: input.dataDir ?? '.steward-agent' }),
        ...(typeof serverPublicKeyFile === 'string' ? { serverPublicKeyFile } : {}),
      };
    }
    const server = compileServerConfig({
      ...input.file.server,
      ...(input.dataDir !== undefined ? { dataDir: input.dataDir } : {}),
    });
    if (role === 'server') return { server };
    return { server, agent: compileAgentConfig(input.file.agent ?? {}, { dataDir: server.dataDir }) };
  } catch (error) {
    const code = error instanceof StewardError ? error.code : 'STEWARD_CONFIG_INVALID';
    return {
      failure: fail(
        { id: 'config', title: 'configuration compiles' },
        code,
        oneLine(error),
        'fix the config file as the message says (docs/admin-guide.md lists every key)',
      ),
    };
  }
}
