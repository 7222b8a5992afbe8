/** `steward agents` (live agents and their executors) and `agents drain|resume ID`. */
import type { Command } from 'commander';
import { CliError } from '../../failures.js';
import { formatBytes, formatElapsed, formatTable, formatTime } from '../../output.js';
import { contextOf, positiveInteger } from '../shared.js';

export function registerAgentCommands(program: Command): void {
  const agents = program
    .command('agents')
    .description('live agents and their executors; `agents drain|resume <id>` to take one out of service')
    .action(async (_options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      const { agents } = await client.call('listAgents');
      if (context.json) return context.printJson({ agents });
      context.out(
        formatTable(
          ['id', 'state', 'labels', 'isolation', 'free/slots', 'executors', 'last seen'],
          agents.map((agent) => [
            agent.id,
            agent.state ?? (agent.draining ? 'draining' : 'active'),
            agent.labels.join(','),
            agent.isolation,
            `${agent.capacity.free}/${agent.capacity.slots}`,
            agent.executors
              .map(
                (executor) =>
                  `${executor.user}(pid ${executor.pid}, ${executor.jobs} jobs${executor.rssBytes === null ? '' : `, ${formatBytes(executor.rssBytes)}`}${executor.idleSinceMs === null ? '' : `, idle ${formatElapsed(Date.now() - executor.idleSinceMs)}`})`,
              )
              .join(' ') || '-',
            formatTime(agent.lastSeen),
          ]),
        ),
      );
    });
  agentDrain(agents);
  agentResume(agents);
}

/** `steward agents drain ID [--wait]` */
function agentDrain(agents: Command): void {
  agents
    .command('drain')
    .description(
      'stop an agent taking new jobs (for maintenance); its running jobs finish. With --wait, return once it has none',
    )
    .argument('<id>', 'agent id (see `steward agents`)')
    .option('--wait', 'wait until the agent reports being drained with no jobs left')
    .option(
      '--timeout <seconds>',
      'with --wait: give up (exit 1) after this long',
      positiveInteger('--timeout', 7 * 86_400),
    )
    .action(async (id: string, options: { wait?: boolean; timeout?: number }, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      await client.call('drainAgent', { params: { id } });
      if (!options.wait) {
        if (context.json) return context.printJson({ id, action: 'drain' });
        context.out(`drain sent to agent ${id}: it takes no new jobs; its running jobs finish\n`);
        return;
      }
      const deadline = options.timeout === undefined ? Infinity : Date.now() + options.timeout * 1000;
      for (;;) {
        const { agents: live } = await client.call('listAgents');
        const agent = live.find((candidate) => candidate.id === id);
        const running = agent ? agent.capacity.slots - agent.capacity.free : undefined;
        if (agent?.draining && running === 0) {
          if (context.json) return context.printJson({ agent });
          context.out(`agent ${id} is drained: no jobs left\n`);
          return;
        }
        if (Date.now() >= deadline)
          throw new CliError(
            'STEWARD_UNAVAILABLE',
            agent?.draining
              ? `agent ${id} still has ${running} job(s) after ${options.timeout}s`
              : `agent ${id} has not reported the drain within ${options.timeout}s (is it running?)`,
          );
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    });
}

/** `steward agents resume ID` */
function agentResume(agents: Command): void {
  agents
    .command('resume')
    .description('let a drained agent take jobs again')
    .argument('<id>', 'agent id')
    .action(async (id: string, _options: unknown, command: Command) => {
      const context = contextOf(command);
      const client = await context.client();
      await client.call('resumeAgent', { params: { id } });
      if (context.json) return context.printJson({ id, action: 'resume' });
      context.out(`resume sent to agent ${id}\n`);
    });
}
