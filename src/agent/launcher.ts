/**
 * Readies a user's executor for a job: resolves the OS account, checks (or makes) the user's home and
 * directories, and takes the user's executor from the pool — recording where a start's time goes. It also
 * keeps the job directories that executors killed by the agent left behind, for the user's next executor
 * to remove (as the user; root never deletes inside a user's tree).
 */
import { LRUCache } from 'lru-cache';
import type { OsAccount } from './accounts.js';
import type { AgentClock, AgentHost, AgentPool, PooledExecutor } from './collaborators.js';
import type { ActiveJob } from './offer-state.js';
import type { UserDirs } from './workspaces.js';

/** How long a user's checked directories are taken as they are before the next check (see `prepared`). */
const DIRS_RECHECK_MS = 60_000;
/** Most users whose checked directories are remembered. */
const MAX_PREPARED_USERS = 10_000;
/** Most users, and job directories per user, remembered as left behind. */
const MAX_LEFT_USERS = 10_000;
const MAX_LEFT_DIRS_PER_USER = 1000;

/** Milliseconds to two decimals, for timing records. */
export function roundMs(ms: number): number {
  return Math.round(ms * 100) / 100;
}

export class Launcher {
  /**
   * Users whose home and directories were checked (or made) lately: their next jobs skip the checks. Root does
   * nothing else with those directories (the executor uses them as the user), so a user who changes their own
   * directories meanwhile affects only their own jobs; the check runs again after DIRS_RECHECK_MS.
   */
  private readonly prepared = new LRUCache<string, UserDirs & { uid: number; at: number }>({
    max: MAX_PREPARED_USERS,
  });
  /** Job directories (`<job>-<attempt>`) left by executors the agent killed, by OS user. Bounded. */
  private readonly leftDirs = new Map<string, Set<string>>();

  constructor(
    private readonly host: AgentHost,
    private readonly pool: AgentPool,
    private readonly clock: AgentClock,
    private readonly keepJobDirs: boolean,
  ) {}

  /**
   * The job's user's executor, ready for the job; sets the job's `coldStart` and `timing`. Throws the
   * account's refusal, a directory problem, or the executor's failure to start.
   */
  async executorFor(job: ActiveJob): Promise<{ executor: PooledExecutor; account: OsAccount }> {
    const account = await this.host.resolveAccount(job.offer.user);
    const t1 = this.clock.monotonic();
    let homeDone = t1;
    let dirsDone = t1;
    let home: Promise<void> | undefined;
    let preparing: Promise<UserDirs> | undefined;
    let dirs = this.prepared.get(account.name);
    if (!dirs || dirs.uid !== account.uid || this.clock.now() - dirs.at > DIRS_RECHECK_MS) {
      // The home (copied from /etc/skel for a new user) and the user's directories are needed only once the
      // job is sent: they are made while the executor takes on the user, not before. The executor enters
      // the workspace only with its first job, which goes after this returns.
      home = this.host.ensureHome(account).then(() => {
        homeDone = this.clock.monotonic();
      });
      preparing = this.host.prepareUserDirs(account).then((made) => {
        dirsDone = this.clock.monotonic();
        return made;
      });
      // Awaited below; a failure is reported there, even when the executor fails first.
      home.catch(() => {});
      preparing.catch(() => {});
    }
    job.coldStart = !this.pool.hasExecutorFor(account.name);
    const executor = await this.pool.acquire(account, dirs ?? this.host.userDirs(account));
    const t4 = this.clock.monotonic();
    if (preparing) dirs = { ...(await preparing), uid: account.uid, at: this.clock.now() };
    await home;
    // Remembered only once the home exists too: a failed one is tried again by the user's next job.
    if (preparing && dirs) this.prepared.set(account.name, dirs);
    const t5 = this.clock.monotonic();
    const left = this.leftDirs.get(account.name);
    if (left) {
      this.leftDirs.delete(account.name);
      executor.process.send({ type: 'remove-job-dirs', names: [...left] });
    }
    // Where a start's time goes (ms), logged with the start latency: the figures to look at when it is slow.
    // `home`, `dirs` and `executor` run side by side from the account's resolution; `dirsWait` is what the
    // job still waited for the first two once its executor was ready.
    job.timing = {
      acceptAndResolve: roundMs(t1 - job.receivedAt),
      home: roundMs(homeDone - t1),
      dirs: roundMs(dirsDone - t1),
      executor: roundMs(t4 - t1),
      dirsWait: roundMs(t5 - t4),
      load: 0,
    };
    return { executor, account };
  }

  /** Notes the directories of a job whose executor the agent killed, for the user's next executor. */
  leftBehind(job: ActiveJob): void {
    const user = job.executor?.account.name;
    if (!user || this.keepJobDirs) return;
    let names = this.leftDirs.get(user);
    if (!names) {
      if (this.leftDirs.size >= MAX_LEFT_USERS) return;
      names = new Set();
      this.leftDirs.set(user, names);
    }
    if (names.size < MAX_LEFT_DIRS_PER_USER) names.add(`${job.offer.jobId}-${job.offer.attempt}`);
  }
}
