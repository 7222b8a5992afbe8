/**
 * Local users and bearer tokens. Login tokens expire after `sessionTtlMs`; named API tokens after the
 * lifetime chosen at creation (or never). Disabled users are refused whatever token they hold.
 */
import type { CompiledServerConfig } from '../config/index.js';
import { StewardError, type Role } from '../protocol/index.js';
import type { Store, TokenRecord } from '../store/index.js';
import type { AuditLog } from './audit.js';
import {
  dummyPasswordHash,
  hashPassword,
  newId,
  newPassword,
  newSecret,
  sha256Hex,
  verifyPassword,
} from './secrets.js';

export interface Principal {
  user: string;
  role: Role;
  tokenId: string;
}

/** last_used_at is written at most this often per token: reads should not each cost a write. */
const TOUCH_INTERVAL_MS = 60_000;

export function bearerOf(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

export class Authenticator {
  constructor(
    private readonly store: Store,
    private readonly audit: AuditLog,
    private readonly config: CompiledServerConfig,
  ) {}

  /** On first start (no users at all) creates `admin`; returns the password when it was generated. */
  async bootstrapAdmin(password: string | undefined): Promise<string | undefined> {
    if ((await this.store.countUsers()) > 0) return undefined;
    const chosen = password && password.length > 0 ? password : newPassword();
    const created = await this.store.createUser({
      name: 'admin',
      role: 'admin',
      passwordHash: await hashPassword(chosen),
      createdAt: Date.now(),
    });
    if (!created) return undefined;
    await this.audit.record({
      actor: 'system',
      action: 'user.create',
      target: 'admin',
      detail: { role: 'admin', bootstrap: true },
    });
    return password && password.length > 0 ? undefined : chosen;
  }

  async login(
    name: string,
    password: string,
    source: string,
  ): Promise<{ token: string; user: string; role: Role; expiresAt: number }> {
    const user = await this.store.getUser(name);
    // Unknown users cost one scrypt too, so response time does not reveal which names exist.
    const ok = await verifyPassword(password, user?.passwordHash ?? (await dummyPasswordHash()));
    if (!user || !ok || user.disabled) {
      const reason = !user ? 'unknown user' : !ok ? 'bad password' : 'user disabled';
      await this.audit.record({
        actor: name,
        action: 'login.failed',
        target: name,
        source,
        detail: { reason },
      });
      throw new StewardError(
        'STEWARD_UNAUTHENTICATED',
        user?.disabled && ok ? 'this user is disabled' : 'wrong user name or password',
      );
    }
    const now = Date.now();
    const token = newSecret('stw_');
    const expiresAt = now + this.config.sessionTtlMs;
    await this.store.createToken({
      id: newId(),
      user: user.name,
      name: 'login',
      kind: 'login',
      tokenHash: sha256Hex(token),
      createdAt: now,
      expiresAt,
    });
    await this.audit.record({ actor: user.name, action: 'login', target: user.name, source });
    return { token, user: user.name, role: user.role, expiresAt };
  }

  /** Resolves `Authorization: Bearer …` to a user, or throws STEWARD_UNAUTHENTICATED. */
  async authenticate(authorization: string | undefined): Promise<Principal> {
    const secret = bearerOf(authorization);
    if (!secret)
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'missing "Authorization: Bearer <token>" header');
    if (!secret.startsWith('stw_'))
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'invalid or expired token');
    const found = await this.store.findToken(sha256Hex(secret));
    const now = Date.now();
    if (!found || found.token.revoked || (found.token.expiresAt !== null && found.token.expiresAt <= now)) {
      throw new StewardError('STEWARD_UNAUTHENTICATED', 'invalid or expired token');
    }
    if (found.user.disabled) throw new StewardError('STEWARD_UNAUTHENTICATED', 'this user is disabled');
    if (found.token.lastUsedAt === null || now - found.token.lastUsedAt > TOUCH_INTERVAL_MS) {
      await this.store.touchToken(found.token.id, now);
    }
    return { user: found.user.name, role: found.user.role, tokenId: found.token.id };
  }

  async createApiToken(
    principal: Principal,
    name: string,
    expiresInDays: number | undefined,
    source: string,
  ): Promise<{ token: string; record: TokenRecord }> {
    const now = Date.now();
    const token = newSecret('stw_');
    const record: TokenRecord = {
      id: newId(),
      user: principal.user,
      name,
      kind: 'api',
      createdAt: now,
      expiresAt: expiresInDays === undefined ? null : now + expiresInDays * 86_400_000,
      lastUsedAt: null,
      revoked: false,
    };
    await this.store.createToken({ ...record, tokenHash: sha256Hex(token) });
    await this.audit.record({
      actor: principal.user,
      action: 'token.create',
      target: record.id,
      source,
      detail: { name, expiresInDays: expiresInDays ?? null },
    });
    return { token, record };
  }

  async revokeApiToken(principal: Principal, id: string, source: string): Promise<void> {
    const revoked = await this.store.revokeToken(principal.user, id);
    if (!revoked) throw new StewardError('STEWARD_NOT_FOUND', `no token ${id}`);
    await this.audit.record({ actor: principal.user, action: 'token.revoke', target: id, source });
  }

  async createUser(
    principal: Principal,
    input: { name: string; password: string; role: Role },
    source: string,
  ): Promise<void> {
    const created = await this.store.createUser({
      name: input.name,
      role: input.role,
      passwordHash: await hashPassword(input.password),
      createdAt: Date.now(),
    });
    if (!created) throw new StewardError('STEWARD_CONFLICT', `user ${input.name} already exists`);
    await this.audit.record({
      actor: principal.user,
      action: 'user.create',
      target: input.name,
      source,
      detail: { role: input.role },
    });
  }
}
